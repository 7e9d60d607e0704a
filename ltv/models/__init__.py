"""The model chain: buyer classifier, gate, revenue regressor, ensemble heads, and LTVModel tying them."""

from ltv.models.chain import LTVModel
from ltv.models.classifier import BuyerClassifier
from ltv.models.ensemble import HurdleEnsemble, StackingEnsemble
from ltv.models.gate import Gate, apply_gate
from ltv.models.regressor import RevenueRegressor

__all__ = [
    "BuyerClassifier",
    "Gate",
    "HurdleEnsemble",
    "LTVModel",
    "RevenueRegressor",
    "StackingEnsemble",
    "apply_gate",
]
