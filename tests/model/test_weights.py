"""Checkpoints: our format round trip, official-format strict mapping, metadata, errors naming the file."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from redi_stream.errors import WeightsError
from redi_stream.model import RediNet, WeightsMeta, default_weights_path, load_weights, save_weights
from redi_stream.model.weights import OutputSpace


def official_convs() -> list[tuple[str, int, int, int, bool]]:
    """(official module prefix, out ch, in ch per group, kernel, bias) for every conv, written from SPEC §2's table."""
    convs = [("conv32x.0.0", 128, 1024 // 128, 3, True), ("conv32x.1.0", 64, 128, 3, True)]
    for k, n in ((1, 4), (2, 5), (3, 5)):
        for j in range(n):
            convs.append((f"RDB{k}.dense_layers.{j}.conv.{0 if j == 0 else 1}", 32, 64 + 32 * j, 3, False))
        convs.append((f"RDB{k}.conv_1x1.0", 64, 64 + 32 * n, 1, False))
    convs += [
        ("rdball.0", 64, 192, 1, False),
        ("conv_rdb8x.0", 64, 4, 3, True),
        ("resblock8x.conv1.0", 64, 64, 3, True),
        ("resblock8x.conv2.0", 64, 64, 3, True),
        ("conv32_8_cat.0.0", 32, 128 // 4, 3, True),
        ("conv32_8_cat.1.0", 192, 32, 3, True),
        ("conv2x.0", 12, 4, 5, True),
        ("conv_2_8_32.0", 12, 24, 5, True),
    ]
    return convs


def fake_official_state(seed: int = 0) -> dict[str, torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    state = {}
    for prefix, c_out, c_in, k, bias in official_convs():
        state[f"{prefix}.weight_g"] = torch.rand(c_out, 1, 1, 1, generator=gen) + 0.5
        state[f"{prefix}.weight_v"] = torch.randn(c_out, c_in, k, k, generator=gen)
        if bias:
            state[f"{prefix}.bias"] = torch.randn(c_out, generator=gen) * 0.05
    return state


def our_conv_for(net: RediNet, official_prefix: str) -> nn.Conv2d:
    """The conv of ``net`` that an official prefix denotes, found by walking the modules (not the mapping code)."""
    parts = official_prefix.split(".")
    if parts[0].startswith("RDB"):
        rdb = getattr(net, f"rdb{parts[0][3]}")
        return rdb.layers[int(parts[2])].conv if parts[1] == "dense_layers" else rdb.conv1x1
    if parts[0] in ("conv32x", "conv32_8_cat"):
        return getattr(net, parts[0])[int(parts[1])]
    if parts[0] == "resblock8x":
        return getattr(net.resblock8x, parts[1])
    return getattr(net, parts[0])


def test_fake_official_table_has_63_keys():
    assert len(fake_official_state()) == 63
    assert sum(v.numel() for v in fake_official_state().values()) == 784_768


@pytest.mark.parametrize("data_parallel", [False, True])
def test_official_checkpoint_loads_and_matches_unfolded_reference(tmp_path, data_parallel):
    state = fake_official_state()
    saved = {f"module.{k}" if data_parallel else k: v for k, v in state.items()}
    path = tmp_path / "official.pt"
    torch.save({"model": saved}, path)

    model = load_weights(path)
    assert model.is_folded and not model.training
    assert model.meta.output == OutputSpace.SRGB and model.meta.gain_target == 0.01

    ref = RediNet(weight_norm=True).eval()
    seen = set()
    with torch.no_grad():
        for prefix, *_ in official_convs():
            conv = our_conv_for(ref, prefix)
            conv.parametrizations.weight.original0.copy_(state[f"{prefix}.weight_g"])
            conv.parametrizations.weight.original1.copy_(state[f"{prefix}.weight_v"])
            seen |= {f"{prefix}.weight_g", f"{prefix}.weight_v"}
            if conv.bias is not None:
                conv.bias.copy_(state[f"{prefix}.bias"])
                seen.add(f"{prefix}.bias")
            else:
                assert f"{prefix}.bias" not in state
    assert seen == set(state)
    x = torch.rand(1, 1, 64, 96) * 3
    with torch.no_grad():
        torch.testing.assert_close(model(x), ref(x), rtol=1e-5, atol=1e-5)
        # also before the clamp, where random weights do not saturate
        s2 = model.unshuffle(x)
        a = model.fb2(model.lse(s2), model.fb1(model.mse(s2), model.hse(s2)))
        b = ref.fb2(ref.lse(s2), ref.fb1(ref.mse(s2), ref.hse(s2)))
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-5)


def test_official_mapping_maps_every_key_to_a_distinct_parameter():
    from redi_stream.model.weights import official_key_to_ours

    mapped = {official_key_to_ours(k) for k in fake_official_state()}
    assert None not in mapped
    assert len(mapped) == 63
    assert mapped == set(RediNet(weight_norm=True).state_dict())


def test_bare_official_state_dict_is_accepted(tmp_path):
    path = tmp_path / "bare.pt"
    torch.save(fake_official_state(), path)
    assert load_weights(path).meta.output == "srgb"


@pytest.mark.parametrize(
    "edit, expected",
    [
        (lambda s: s.pop("RDB2.conv_1x1.0.weight_v"), r"missing keys \['rdb2\.conv1x1\.parametrizations"),
        (lambda s: s.__setitem__("extra.0.weight_g", torch.ones(1, 1, 1, 1)), r"unexpected keys \['extra"),
        (lambda s: s.__setitem__("RDB1.dense_layers.2.conv.0.weight_v", torch.ones(32, 128, 3, 3)), "unexpected"),
        (lambda s: s.__setitem__("conv2x.0.weight_v", torch.ones(12, 4, 3, 3)), r"shape mismatch.*\(12, 4, 3, 3\)"),
        (lambda s: s.__setitem__("conv2x.0.bias", "oops"), "shape mismatch"),
    ],
)
def test_official_mismatches_raise_weights_error_listing_keys(tmp_path, edit, expected):
    state = fake_official_state()
    edit(state)
    path = tmp_path / "bad.pt"
    torch.save({"model": state}, path)
    with pytest.raises(WeightsError, match=expected) as info:
        load_weights(path)
    assert "bad.pt" in str(info.value)


def test_ours_round_trip(tmp_path):
    torch.manual_seed(3)
    net = RediNet().eval()  # weight-normalised: save folds a copy and leaves it alone
    meta = WeightsMeta(
        output="linear_camera_rgb",
        gain_target=0.0012,
        gain_multiplier_default=1.0,
        provenance={"data": "bsds500 unprocessed", "iterations": 10, "eval": {"psnr_db": 30.1}},
        version="test-1",
    )
    path = tmp_path / "ours.pt"
    save_weights(net, path, meta)
    assert not net.is_folded
    assert path.stat().st_size < 5 * 2**20
    obj = torch.load(path, weights_only=True)
    assert obj["format"] == "redi-stream" and obj["version"] == 1
    assert all(v.dtype == torch.float32 for v in obj["state_dict"].values())
    loaded = load_weights(path)
    assert loaded.meta == meta and loaded.is_folded and not loaded.training
    x = torch.rand(1, 1, 32, 64) * 2
    with torch.no_grad():
        torch.testing.assert_close(loaded(x), net(x), rtol=0, atol=1e-6)
    save_weights(loaded, tmp_path / "again.pt", loaded.meta)  # folded models save as they are
    assert load_weights(tmp_path / "again.pt").meta == meta


def test_ours_with_wrong_shape_or_version_is_rejected(tmp_path):
    path = tmp_path / "ours.pt"
    save_weights(RediNet(weight_norm=False), path, WeightsMeta())
    obj = torch.load(path, weights_only=True)
    obj["state_dict"]["rdball.weight"] = torch.zeros(64, 190, 1, 1)
    torch.save(obj, path)
    with pytest.raises(WeightsError, match="rdball.weight"):
        load_weights(path)
    obj["version"] = 2
    torch.save(obj, path)
    with pytest.raises(WeightsError, match="version 2"):
        load_weights(path)


def test_meta_validation_and_dict_round_trip():
    meta = WeightsMeta(output="srgb", gain_target=0.01, gain_multiplier_default=5, provenance={"a": [1, 2]})
    assert meta.output is OutputSpace.SRGB and isinstance(meta.gain_multiplier_default, float)
    assert WeightsMeta.from_dict(meta.to_dict()) == meta
    assert meta.to_dict()["output"] == "srgb"
    with pytest.raises(WeightsError, match="linear_camera_rgb"):
        WeightsMeta(output="rec2020")
    with pytest.raises(WeightsError, match="redi-v1"):
        WeightsMeta(architecture="unet")
    with pytest.raises(WeightsError, match="positive"):
        WeightsMeta(gain_target=0.0)
    with pytest.raises(WeightsError, match="unknown weights metadata fields"):
        WeightsMeta.from_dict({"output": "srgb", "colour": 1})
    with pytest.raises(ValueError):  # WeightsError is also a ValueError
        WeightsMeta.from_dict("srgb")


def test_unreadable_or_foreign_files_raise_weights_error_naming_the_path(tmp_path):
    missing = tmp_path / "nope.pt"
    with pytest.raises(WeightsError, match=r"cannot read weights file .*nope\.pt: No such file or directory$"):
        load_weights(missing)
    with pytest.raises(WeightsError, match=r"cannot read weights file .*: Is a directory$"):
        load_weights(tmp_path)
    garbage = tmp_path / "garbage.pt"
    for junk in (b"this is not a checkpoint", b"hello", bytes(range(256)) * 4):
        garbage.write_bytes(junk)
        with pytest.raises(WeightsError, match=r"garbage\.pt: not a PyTorch checkpoint \(torch\.load: \w+"):
            load_weights(garbage)
    foreign = tmp_path / "foreign.pt"
    torch.save({"state": {"a": torch.zeros(1)}}, foreign)
    with pytest.raises(WeightsError, match="not a REDI checkpoint"):
        load_weights(foreign)


def test_save_to_unwritable_place_raises_weights_error(tmp_path):
    with pytest.raises(WeightsError, match="cannot write"):
        save_weights(RediNet(weight_norm=False), tmp_path / "no" / "such" / "dir.pt", WeightsMeta())


def test_default_weights_path_is_none_or_loadable():
    path = default_weights_path()
    if path is not None:
        assert load_weights(path).meta.architecture == "redi-v1"
