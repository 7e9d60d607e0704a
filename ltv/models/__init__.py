"""The model chain: buyer classifier, whale model, revenue regressor, gate and the hurdle head, tied by
LTVModel (ltv/models/chain.py, read top to bottom)."""

from ltv.models.chain import LTVModel
from ltv.models.classifier import BuyerClassifier, WhaleClassifier
from ltv.models.fitting import LabelledRows
from ltv.models.gate import Gate, apply_gate
from ltv.models.regressor import RevenueRegressor

__all__ = [
    "BuyerClassifier",
    "Gate",
    "LTVModel",
    "LabelledRows",
    "RevenueRegressor",
    "WhaleClassifier",
    "apply_gate",
]
