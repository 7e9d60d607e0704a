"""Loading into blocks: the feature encodings' fit is never silent."""

from __future__ import annotations

import logging
import time

from ltv import cluster
from ltv.data.window import Window
from ltv.features.builder import FeatureBuilder
from ltv.synthetic.generator import generate
from ltv.tasks.blocks import fit_features


def test_fitting_the_encodings_logs_progress_while_it_runs(tmp_path, caplog, monkeypatch):
    root = generate(tmp_path / "data", train_start="2025-10-04-22", train_hours=2, test_hours=1,
                    rows_per_hour=200, files_per_hour=1, seed=3, workers=1)  # fmt: skip
    real = FeatureBuilder.fit_from

    def slow_fit(self, *args, **kwargs):
        time.sleep(0.9)  # an export's fit runs for tens of seconds
        return real(self, *args, **kwargs)

    monkeypatch.setattr(FeatureBuilder, "fit_from", slow_fit)
    caplog.set_level(logging.INFO, logger="ltv.fit")
    builder = FeatureBuilder()
    window = Window(name="train", start="2025-10-04-22", end="2025-10-04-23")
    with cluster.connect({"kind": "sync"}) as engine:
        report = fit_features(engine, builder, root, window, seed=0, progress_every_s=0.2)
    messages = [r.getMessage() for r in caplog.records]
    beats = [m for m in messages if m.startswith("stage feature_encodings: 400 rows")]
    assert len(beats) >= 2, messages
    assert any(m.startswith("stage feature_encodings done: 400 rows") for m in messages)
    assert report.rows_kept == 400 and len(builder.feature_names_) > 100
