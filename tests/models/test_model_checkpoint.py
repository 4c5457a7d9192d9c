import pytest
import torch

from landscape.errors import CheckpointError, LandscapeError
from landscape.models import create_model, model_config
from landscape.models.checkpoint import build_model, load_checkpoint, save_checkpoint
from landscape.train.losses import IQALoss, ranking_loss


def test_micro_model_shapes_and_config_roundtrip():
    cfg = model_config("micro", dropout=0.1, drop_path_rate=0.05)
    model = create_model(cfg)
    out = model(torch.randn(3, 3, cfg.img_size, cfg.img_size))
    assert out.shape == (3,)
    assert 100_000 < sum(p.numel() for p in model.parameters()) < 200_000
    assert type(cfg).from_dict(cfg.to_dict()) == cfg


def test_conv_stem_halves_the_input_and_keeps_the_token_grid():
    from landscape.models.schema import check_swin_config
    from landscape.models.swin_iqa import SwinIQAConfig
    cfg = model_config("micro")
    model = create_model(cfg).eval()
    assert cfg.stem_channels == (16, 32, 32) and cfg.stem_stride == 2
    convs = [m for m in model.stem if isinstance(m, torch.nn.Conv2d)]
    assert [(c.in_channels, c.out_channels, c.stride[0]) for c in convs] == [(3, 16, 1), (16, 32, 2), (32, 32, 1)]
    x = torch.randn(2, 3, cfg.img_size, cfg.img_size)
    assert model.stem(x).shape == (2, 32, cfg.img_size // 2, cfg.img_size // 2)
    # the backbone sees the stem's output: tokens = (img_size / patch_size)^2, as without a stem
    tokens = model.backbone.patch_embed(model.stem(x))
    assert tokens.shape[1:3] == (cfg.img_size // cfg.patch_size, cfg.img_size // cfg.patch_size)
    # a config without the key (earlier versions) is the stem-less model, with no stem parameters
    old = cfg.to_dict()
    old.pop("stem_channels")
    plain = SwinIQAConfig.from_dict({**old, "img_size": 64})
    assert plain.stem_channels == () and not any(k.startswith("stem.") for k in create_model(plain).state_dict())
    for bad, match in (([0], r"stem_channels\[0\]=0"), ("wide", "stem_channels='wide'"),
                       ([16, 32], "must be even")):
        with pytest.raises(CheckpointError, match=match):
            check_swin_config({**cfg.to_dict(), "stem_channels": bad,
                               **({"img_size": 33} if bad == [16, 32] else {})}, "ckpt.pt")


def test_unknown_preset():
    with pytest.raises(LandscapeError, match="unknown model preset 'huge'"):
        model_config("huge")


def test_checkpoint_roundtrip_rebuilds_identical_model(tmp_path):
    model = create_model(model_config("micro")).eval()
    path = tmp_path / "ckpt.pt"
    digest = save_checkpoint(path, model, model.config.to_dict(), {"epoch": 3})
    ckpt = load_checkpoint(path)
    assert ckpt.content_hash == digest and ckpt.meta["epoch"] == 3
    rebuilt = build_model(ckpt)
    size = model.config.img_size
    x = torch.randn(2, 3, size, size)
    assert torch.equal(model(x), rebuilt(x))
    for (ka, a), (kb, b) in zip(model.state_dict().items(), rebuilt.state_dict().items()):
        assert ka == kb and torch.equal(a, b)
    assert not list(tmp_path.glob(".*tmp"))


class _Payload:
    def __reduce__(self):
        import os
        return (os.system, ("touch " + str(_Payload.marker),))


def test_pickled_code_is_refused_and_not_run(tmp_path):
    _Payload.marker = tmp_path / "pwned"
    path = tmp_path / "evil.pt"
    torch.save({"format": "landscape-checkpoint-v1", "x": _Payload()}, path)
    with pytest.raises(CheckpointError, match="refused"):
        load_checkpoint(path)
    assert not _Payload.marker.exists()


def test_truncated_and_tampered_checkpoints(tmp_path):
    model = create_model(model_config("micro"))
    path = tmp_path / "c.pt"
    save_checkpoint(path, model, model.config.to_dict())
    data = path.read_bytes()
    (tmp_path / "trunc.pt").write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match="trunc.pt"):
        load_checkpoint(tmp_path / "trunc.pt")
    payload = torch.load(path, weights_only=True)
    payload["state_dict"]["head.4.bias"] += 1
    torch.save(payload, tmp_path / "tampered.pt")
    with pytest.raises(CheckpointError, match="content hash mismatch"):
        load_checkpoint(tmp_path / "tampered.pt")


def test_other_architecture_lists_mismatches(tmp_path):
    model = create_model(model_config("micro"))
    path = tmp_path / "c.pt"
    cfg = model.config.to_dict()
    cfg["embed_dim"] = 16  # claims another width than the weights have
    save_checkpoint(path, model, cfg)
    with pytest.raises(CheckpointError, match="shape mismatches: .*vs"):
        build_model(load_checkpoint(path))


def test_pretrained_local_file_loads_through_timm_filter(tmp_path):
    cfg = model_config("micro")
    reference = create_model(cfg)
    weights = {k: v for k, v in reference.backbone.state_dict().items()}
    path = tmp_path / "swin_micro.pth"
    torch.save(weights, path)
    loaded = create_model(cfg, pretrained=path)
    for k, v in loaded.backbone.state_dict().items():
        assert torch.equal(v, weights[k]), k
    with pytest.raises(CheckpointError, match="not found"):
        create_model(cfg, pretrained=tmp_path / "missing.pth")
    (tmp_path / "junk.pth").write_bytes(b"not a checkpoint")
    with pytest.raises(CheckpointError, match="cannot load pretrained"):
        create_model(cfg, pretrained=tmp_path / "junk.pth")


def test_ranking_loss_by_hand():
    p = torch.tensor([0.2, 0.5, 0.1])
    y = torch.tensor([0.3, 0.9, 0.3])  # pair (0, 2) has equal labels: masked
    # valid pairs: (0,1): sign(y0-y1)=-1 -> relu(m + (p0-p1)) ; (1,2): +1 -> relu(m - (p1-p2))
    m = 0.5
    expected = (max(0.0, m + (0.2 - 0.5)) + max(0.0, m - (0.5 - 0.1))) / 2
    assert ranking_loss(p, y, m).item() == pytest.approx(expected)
    assert ranking_loss(torch.tensor([0.3]), torch.tensor([0.1]), m).item() == 0.0
    loss = IQALoss(ranking_alpha=2.0, ranking_margin=m)(p, y)
    assert loss.item() == pytest.approx((0.1 + 0.4 + 0.2) / 3 + 2.0 * expected)
