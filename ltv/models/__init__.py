"""The model chain: buyer classifier, whale model, gate, revenue regressor, ensemble heads, and LTVModel
tying them."""

from ltv.models.chain import LTVModel
from ltv.models.classifier import BuyerClassifier
from ltv.models.ensemble import StackingEnsemble
from ltv.models.gate import Gate, apply_gate
from ltv.models.hurdle import HurdleEnsemble
from ltv.models.regressor import RevenueRegressor
from ltv.models.rows import LabelledRows
from ltv.models.whale import WhaleClassifier

__all__ = [
    "BuyerClassifier",
    "Gate",
    "HurdleEnsemble",
    "LTVModel",
    "LabelledRows",
    "RevenueRegressor",
    "StackingEnsemble",
    "WhaleClassifier",
    "apply_gate",
]
