import json
import shutil
import struct

import pytest

from adapters.errors import AdapterError
from adapters.validation import validate_adapter


def check(path, base_dir, **kw):
    return validate_adapter(path, base_model="tiny-base", max_rank=16,
                            base_config=json.loads((base_dir / "config.json").read_text()),
                            base_model_dir=base_dir, **kw)  # fmt: skip


def test_a_good_adapter_passes(adapter, base_dir) -> None:
    info = check(adapter, base_dir)
    assert info.rank == 4 and info.alpha == 8 and info.target_modules == ["q_proj", "v_proj"]
    assert len(info.digest) == 64 and info.size_bytes > 0


def expect(code, path, base_dir, match):
    with pytest.raises(AdapterError, match=match) as exc:
        check(path, base_dir)
    assert exc.value.code == code and exc.value.kind == "invalid"


def test_not_an_adapter(tmp_path, base_dir) -> None:
    expect("not_an_adapter", tmp_path, base_dir, "adapter_config.json is missing")


def test_wrong_base_model(tmp_path, base_dir, make, tiny) -> None:
    expect("wrong_base_model", make(tmp_path / "x", base="other/llama-7b"), base_dir,
           "trained on 'other/llama-7b'")  # fmt: skip


def test_rank_too_high(tmp_path, base_dir, make, tiny) -> None:
    expect("rank_too_high", make(tmp_path / "x", rank=32), base_dir, "rank 32 is above")


def test_modules_to_save(tmp_path, base_dir, make, tiny) -> None:
    path = make(tmp_path / "x", modules_to_save=["lm_head"])
    expect("modules_to_save", path, base_dir, "modules_to_save")


def test_truncated_weights(adapter, base_dir) -> None:
    weights = adapter / "adapter_model.safetensors"
    weights.write_bytes(weights.read_bytes()[:-100])
    expect("corrupt_weights", adapter, base_dir, "truncated")


def test_garbage_weights(adapter, base_dir) -> None:
    (adapter / "adapter_model.safetensors").write_bytes(b"\x00" * 64)
    expect("corrupt_weights", adapter, base_dir, "corrupt")


def test_shapes_from_another_architecture(tmp_path, base_dir, make, tiny) -> None:
    path = make(tmp_path / "x", config={**tiny, "hidden_size": 96})
    expect("shape_mismatch", path, base_dir, "expected")


def test_too_many_layers(tmp_path, base_dir, make, tiny) -> None:
    path = make(tmp_path / "x", config={**tiny, "num_hidden_layers": 3})
    expect("shape_mismatch", path, base_dir, "layer 2")


def test_bin_weights_get_a_hint(adapter, base_dir) -> None:
    shutil.move(adapter / "adapter_model.safetensors", adapter / "adapter_model.bin")
    expect("not_an_adapter", adapter, base_dir, "safe_serialization")


def test_not_lora(adapter, base_dir) -> None:
    cfg = json.loads((adapter / "adapter_config.json").read_text())
    cfg["peft_type"] = "IA3"
    (adapter / "adapter_config.json").write_text(json.dumps(cfg))
    expect("not_lora", adapter, base_dir, "only LORA")


def edit_config(adapter, **fields) -> None:
    cfg = json.loads((adapter / "adapter_config.json").read_text())
    (adapter / "adapter_config.json").write_text(json.dumps({**cfg, **fields}))


@pytest.mark.parametrize(
    ("fields", "code", "match"),
    [({"lora_alpha": "sixteen"}, "invalid_alpha", "'lora_alpha' must be a positive number"),
     ({"lora_alpha": [16]}, "invalid_alpha", "got \\[16\\]"),
     ({"lora_alpha": True}, "invalid_alpha", "got True"),
     ({"lora_alpha": 10**400}, "invalid_alpha", "positive number"),
     ({"target_modules": 7}, "invalid_target_modules", "must be a list of module names, got 7"),
     ({"target_modules": ["q_proj", 3]}, "invalid_target_modules", "list of module names"),
     ({"r": True}, "invalid_rank", "'r' must be a positive integer")],
    ids=["alpha-string", "alpha-list", "alpha-bool", "alpha-huge", "targets-int",
         "targets-mixed", "rank-bool"],
)  # fmt: skip
def test_config_fields_of_the_wrong_type(adapter, base_dir, fields, code, match) -> None:
    edit_config(adapter, **fields)
    expect(code, adapter, base_dir, match)


def test_one_target_module_name_is_a_list_of_one(adapter, base_dir) -> None:
    edit_config(adapter, target_modules="q_proj", lora_alpha=None)
    info = check(adapter, base_dir)
    assert info.target_modules == ["q_proj"] and info.alpha == 4.0  # no alpha: alpha = r


def test_config_json_nested_too_deep(adapter, base_dir) -> None:
    (adapter / "adapter_config.json").write_text("[" * 100_000 + "]" * 100_000)
    expect("not_an_adapter", adapter, base_dir, "not valid JSON")


def rewrite_header(adapter, edit) -> None:
    """Apply `edit` to the first tensor's header entry, keeping the data as it was."""
    path = adapter / "adapter_model.safetensors"
    raw = path.read_bytes()
    (n,) = struct.unpack("<Q", raw[:8])
    header = json.loads(raw[8 : 8 + n])
    edit(header[next(k for k in header if k != "__metadata__")])
    encoded = json.dumps(header).encode()
    path.write_bytes(struct.pack("<Q", len(encoded)) + encoded + raw[8 + n :])


@pytest.mark.parametrize(
    "edit",
    [lambda m: m.update(data_offsets=["0", "x"]),
     lambda m: m.update(data_offsets=[0, 1.5]),
     lambda m: m.update(data_offsets=[0, [1]]),
     lambda m: m.update(data_offsets=[64, 0]),
     lambda m: m.update(data_offsets=[0, 1, 2]),
     lambda m: m.update(shape=["Infinity"]),
     lambda m: m.update(shape=4),
     lambda m: m.clear() or m.update(dtype="F32")],
    ids=["string-offsets", "float-offset", "list-offset", "reversed-offsets", "three-offsets",
         "string-dim", "int-shape", "no-shape-or-offsets"],
)  # fmt: skip
def test_malformed_tensor_entries(adapter, base_dir, edit) -> None:
    rewrite_header(adapter, edit)
    expect("corrupt_weights", adapter, base_dir, "no valid shape/offsets")


def test_header_that_is_not_a_tensor_map(adapter, base_dir) -> None:
    rewrite_header(adapter, lambda m: None)  # unchanged: the file is still valid
    check(adapter, base_dir)
    path = adapter / "adapter_model.safetensors"
    raw = path.read_bytes()
    (n,) = struct.unpack("<Q", raw[:8])
    bad = json.dumps({"x": "not a tensor"}).encode().ljust(n)
    path.write_bytes(raw[:8] + bad + raw[8 + n :])
    expect("corrupt_weights", adapter, base_dir, "no valid shape/offsets")
