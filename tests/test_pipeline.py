"""LTVPipeline: fit on raw labelled Arrow tables or on extracted features (LabelledRows) alike; public
an unfitted pipeline refuses to predict."""

from __future__ import annotations

import datetime as dt

import numpy as np
import pyarrow as pa
import pytest

from ltv.contract import LABEL_COLUMNS
from ltv.features import FeatureBuilder
from ltv.models import LabelledRows
from ltv.pipeline import LTVPipeline, request_time
from tests.helpers.chain_data import small_chain
from tests.helpers.chain_data import synthetic_window as _window


@pytest.fixture(scope="module")
def windows():
    start = dt.datetime(2025, 10, 1, tzinfo=dt.timezone.utc)
    return _window(start, 3, 2500), _window(start + dt.timedelta(hours=3), 2, 2500)


def _pipeline() -> LTVPipeline:
    return LTVPipeline(FeatureBuilder(groups={"scalars": True, "categoricals": True}), small_chain(seed=2))


def test_fit_on_tables_equals_fit_on_extracted_rows(windows):
    train, valid = windows
    from_tables = _pipeline().fit(train, valid)
    extracted = _pipeline()

    def rows(table):
        return LabelledRows(
            extracted.features.extract(table),
            table.select([c for c in LABEL_COLUMNS if c in table.column_names]).to_pandas().astype("float64"),
            request_time(table.column("datetime").to_pylist()),
        )

    extracted.fit(rows(train), rows(valid))
    probe = valid.drop_columns(LABEL_COLUMNS).slice(0, 700)
    pred = from_tables.predict(probe)
    assert pred.shape == (700,) and np.isfinite(pred).all() and (pred >= 0).all() and pred.max() > 0
    np.testing.assert_array_equal(extracted.predict(probe), pred)
    parts = from_tables.predict_parts(probe)
    np.testing.assert_array_equal(parts["final"].to_numpy(), pred)
    assert from_tables.feature_names_ == extracted.feature_names_


def test_an_unfitted_pipeline_refuses_to_predict():
    with pytest.raises(ValueError, match="not fitted"):
        _pipeline().predict(pa.table({"x": [1]}))
