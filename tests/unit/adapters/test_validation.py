import json
import shutil

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
    assert exc.value.code == code and exc.value.status_code == 400


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
