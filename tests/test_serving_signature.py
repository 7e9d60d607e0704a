"""The hand-written signature and input example of the served model."""

from __future__ import annotations

from mlflow.types.schema import AnyType

from ltv import contract as c
from ltv.serving.coerce import frame_to_table
from ltv.serving.signature import input_example, input_schema, model_signature


def test_default_signature_has_no_enforced_inputs_but_output_and_parts_param():
    sig = model_signature()
    assert sig.inputs is None
    assert sig.outputs.input_names() == ["iap_revenue_d7"] and sig.outputs.input_types()[0].name == "double"
    (param,) = sig.params.params
    assert (param.name, param.default, param.dtype.name) == ("parts", False, "boolean")


def test_input_schema_covers_the_contract_all_optional_and_permissive():
    schema = input_schema()
    assert schema.input_names() == c.FEATURE_COLUMNS + ["datetime", "row_id"]
    assert schema.required_input_names() == []
    types = dict(zip(schema.input_names(), schema.input_types(), strict=True))
    for name in c.NESTED_COLUMNS + c.NUMBER_COLUMNS:  # JSON objects, pair lists, ints, NaN all pass through
        assert isinstance(types[name], AnyType), name
    assert all(types[n].name == "string" for n in c.STRING_COLUMNS)
    assert model_signature(named_inputs=True).inputs == schema


def test_input_example_is_valid_contract_rows_in_both_map_forms():
    ex = input_example(4)
    assert list(ex.columns) == c.FEATURE_COLUMNS and len(ex) == 4
    assert isinstance(ex["cpm"][0], dict) and isinstance(ex["cpm"][1], list)  # object and [key, value] pairs
    t = frame_to_table(ex)
    assert t.column("cpm").to_pylist()[:2] == [
        [("b", 0.8), ("i", 6.1), ("r", 11.0)],
        [("b", 1.2), ("i", 9.0)],
    ]
    assert t.column("user_actions_bundles_action_count")[0].as_py()[0][1] == [("click", 3), ("install", 1)]
