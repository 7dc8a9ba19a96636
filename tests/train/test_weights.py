"""Fine-tuning: published weights through torch's cache (never the network here), local
torchvision files, Revet checkpoints onto other class sets, band adaptation, freezing."""
import urllib.error

import pytest

torch = pytest.importorskip("torch")

from detector.spec import SPEC_KEY, ModelSpec  # noqa: E402
from detector.train.models import PRETRAINED, available, build_model  # noqa: E402
from detector.train import weights as W  # noqa: E402

TILE = 128


def spec_for(arch="fcos_lite", classes=("a", "b"), bands=3):
    return ModelSpec(arch=arch, classes=tuple(classes), bands=tuple(range(1, bands + 1)),
                     offset=(0.0,) * bands, scale=(1.0,) * bands, mean=(0.5,) * bands, std=(0.25,) * bands,
                     tile_size=TILE, overlap=0)


@pytest.fixture
def hub(tmp_path, monkeypatch):
    """torch's cache in an empty tmp folder; any download attempt fails like an offline machine."""
    old = torch.hub.get_dir()
    torch.hub.set_dir(str(tmp_path / "hub"))
    calls = []

    def offline(url, *a, **k):
        calls.append(url)
        raise urllib.error.URLError("no network in tests")

    monkeypatch.setattr(torch.hub, "download_url_to_file", offline)
    yield tmp_path / "hub" / "checkpoints", calls
    torch.hub.set_dir(old)


def save_revet_checkpoint(path, spec, model):
    torch.save({SPEC_KEY: spec.to_json(), "state_dict": {"model." + k: v for k, v in model.state_dict().items()}},
               path)


def torchvision_coco_model(arch):
    """A randomly initialised torchvision detector with COCO's 91 classes, laid out exactly as
    the published file (no download: weights and backbone weights None)."""
    from torchvision.models import detection as d

    build = {
        "fcos_resnet50": d.fcos_resnet50_fpn,
        "retinanet_resnet50_v2": d.retinanet_resnet50_fpn_v2,
        "fasterrcnn_resnet50_v2": d.fasterrcnn_resnet50_fpn_v2,
        "fasterrcnn_mobilenet": d.fasterrcnn_mobilenet_v3_large_fpn,
        "ssdlite": d.ssdlite320_mobilenet_v3_large,
    }[arch]
    return build(weights=None, weights_backbone=None, num_classes=91)


def test_none_keeps_initialisation():
    spec = spec_for()
    model = build_model(spec)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    report = W.load_weights(model, spec, "none")
    assert report["loaded"] == 0
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())


def test_revet_checkpoint_onto_other_classes_replaces_head(tmp_path):
    src_spec = spec_for(classes=("bunker", "revetment", "shelter"))
    torch.manual_seed(1)
    src = build_model(src_spec)
    ckpt = tmp_path / "best.ckpt"
    save_revet_checkpoint(ckpt, src_spec, src)

    spec = spec_for(classes=("silo", "tree"))
    torch.manual_seed(2)
    model = build_model(spec)
    head_init = model.head.classification_head.cls_logits.weight.clone()
    report = W.load_weights(model, spec, str(ckpt))
    assert report["head_replaced"] == ["head.classification_head.cls_logits"]
    assert report["skipped"] == [] and report["new"] == [] and report["unused"] == 0
    assert report["source"] == str(ckpt)
    assert torch.equal(model.head.classification_head.cls_logits.weight, head_init)
    src_sd = src.state_dict()
    for k, v in model.state_dict().items():
        if "cls_logits" not in k:
            assert torch.equal(v, src_sd[k]), k
    assert "class head replaced" in W.format_report(report)


def test_revet_checkpoint_same_count_other_names_still_replaces_head(tmp_path):
    src_spec = spec_for(classes=("a", "b"))
    ckpt = tmp_path / "a.ckpt"
    save_revet_checkpoint(ckpt, src_spec, build_model(src_spec))
    spec = spec_for(classes=("c", "d"))
    report = W.load_weights(build_model(spec), spec, ckpt)
    assert report["head_replaced"] == ["head.classification_head.cls_logits"]
    same = W.load_weights(build_model(src_spec), src_spec, ckpt)
    assert same["head_replaced"] == [] and same["new"] == [] and same["loaded_fraction"] == 1.0


def test_band_count_change_adapts_first_conv(tmp_path):
    src_spec = spec_for(bands=3)
    src = build_model(src_spec)
    ckpt = tmp_path / "rgb.ckpt"
    save_revet_checkpoint(ckpt, src_spec, src)
    spec = spec_for(bands=4)
    model = build_model(spec)
    report = W.load_weights(model, spec, ckpt)
    assert report["first_conv_adapted"] == "backbone.body.conv1.weight: 3 -> 4 bands"
    assert report["skipped"] == []
    w, w0 = model.backbone.body.conv1.weight, src.backbone.body.conv1.weight
    assert w.shape[1] == 4
    torch.testing.assert_close(w[:, :3], w0 * 3 / 4)
    torch.testing.assert_close(w[:, 3], w0.mean(1) * 3 / 4)


@pytest.mark.parametrize("arch", sorted(a for a in available() if PRETRAINED[a].coco))
def test_torchvision_file_in_cache_loads_as_coco(arch, hub):
    """The file torchvision would download, placed in torch's cache under its published name,
    loads through ``--weights coco`` without touching the network."""
    folder, calls = hub
    src = torchvision_coco_model(arch)
    path = W.cache_path(PRETRAINED[arch].coco)
    assert path.parent == folder
    path.parent.mkdir(parents=True)
    torch.save(src.state_dict(), path)

    spec = spec_for(arch, classes=("bunker", "revetment", "shelter"))
    model = build_model(spec)
    report = W.load_weights(model, spec, "coco")
    assert calls == []
    assert report["head_replaced"], report
    assert report["loaded_fraction"] > 0.95, W.format_report(report)
    # a tensor outside the head came across unchanged
    name = next(k for k in src.state_dict() if "layer_blocks" in k or k.startswith("backbone.features.0.0"))
    key = PRETRAINED[arch].coco_key(name)
    torch.testing.assert_close(model.state_dict()[key], src.state_dict()[name])
    if arch == "fasterrcnn_mobilenet":  # finer FPN levels than torchvision's: reported, not fatal
        assert "backbone.fpn.inner_blocks.0.0.weight" in report["new"]
        assert any(s.startswith("rpn.head.cls_logits.weight") for s in report["skipped"])
    else:
        assert report["skipped"] == [] and report["new"] == []

    # the same file given as a path takes the same route
    again = W.load_weights(build_model(spec), spec, path)
    assert {k: v for k, v in again.items() if k != "source"} == {k: v for k, v in report.items() if k != "source"}


def test_offline_coco_with_empty_cache_says_what_to_do(hub):
    folder, calls = hub
    spec = spec_for("fcos_resnet50")
    with pytest.raises(W.WeightsError) as e:
        W.load_weights(build_model(spec), spec, "coco")
    msg = str(e.value)
    assert calls == ["https://download.pytorch.org/models/fcos_resnet50_fpn_coco-99b0c9b7.pth"]
    assert str(folder / "fcos_resnet50_fpn_coco-99b0c9b7.pth") in msg
    assert "URLError" in msg and "pass the file's path" in msg


def test_no_published_weights_of_that_kind(hub):
    spec = spec_for("fcos_lite")
    with pytest.raises(W.WeightsError, match="no published COCO weights.*fcos_resnet50"):
        W.load_weights(build_model(spec), spec, "coco")


def test_missing_path_is_named(tmp_path):
    spec = spec_for()
    with pytest.raises(W.WeightsError, match="does not exist"):
        W.load_weights(build_model(spec), spec, str(tmp_path / "nope.pth"))


def test_pickled_objects_are_refused(tmp_path):
    path = tmp_path / "evil.pth"
    torch.save({"model": build_model(spec_for())}, path)  # a whole module: needs full unpickling
    spec = spec_for()
    with pytest.raises(W.WeightsError, match="not a loadable"):
        W.load_weights(build_model(spec), spec, path)


def test_imagenet_backbone_from_cache(hub):
    """ResNet-18 classifier weights into fcos_lite's body (which stops after layer3)."""
    from torchvision.models import resnet18

    src = resnet18(weights=None)
    path = W.cache_path(PRETRAINED["fcos_lite"].imagenet)
    assert path.name == "resnet18-f37072fd.pth"
    path.parent.mkdir(parents=True)
    torch.save(src.state_dict(), path)
    spec = spec_for("fcos_lite", bands=4)
    model = build_model(spec)
    report = W.load_weights(model, spec, "imagenet")
    assert report["first_conv_adapted"] == "backbone.body.conv1.weight: 3 -> 4 bands"
    assert report["new"] == [] and report["skipped"] == []
    assert report["unused"] > 0  # layer4 and fc
    torch.testing.assert_close(model.backbone.body.layer3[1].conv2.weight, src.layer3[1].conv2.weight)
    assert report["outside_backbone"] > 0  # FPN and head stay initialised


def test_imagenet_mobilenet_into_ssdlite_layout(tmp_path):
    """SSDlite splits MobileNetV3's features at block 13; every backbone tensor is mapped
    (a reduced-tail classifier fits fully; torchvision's full-tail ImageNet file fits up to C4)."""
    from functools import partial

    from torchvision.models import mobilenet_v3_large

    src = mobilenet_v3_large(weights=None, reduced_tail=True, norm_layer=partial(torch.nn.BatchNorm2d, eps=0.001))
    path = tmp_path / "mnv3.pth"
    torch.save(src.state_dict(), path)
    spec = spec_for("ssdlite")
    model = build_model(spec)
    report = W.load_weights(model, spec, path)
    assert report["skipped"] == [] and report["new"] == []
    sd, src_sd = model.state_dict(), src.state_dict()
    torch.testing.assert_close(sd["backbone.features.1.0.1.0.weight"], src_sd["features.13.block.1.0.weight"])
    torch.testing.assert_close(sd["backbone.features.0.13.0.weight"], src_sd["features.13.block.0.0.weight"])
    torch.testing.assert_close(sd["backbone.features.1.3.0.weight"], src_sd["features.16.0.weight"])

    full = mobilenet_v3_large(weights=None)
    torch.save(full.state_dict(), path)
    report = W.load_weights(build_model(spec), spec, path)
    assert report["skipped"] and all(".features.1." in s for s in report["skipped"])


def test_freeze_resnet_stages_keeps_batchnorm_statistics():
    spec = spec_for("fcos_lite")
    model = build_model(spec)
    keys = list(model.state_dict())
    n = W.freeze(model, backbone_stages=2)
    body = model.backbone.body
    expected = sum(p.numel() for m in (body.conv1, body.bn1, body.layer1, body.layer2) for p in m.parameters())
    assert n == expected
    assert not any(p.requires_grad for p in body.layer2.parameters())
    assert all(p.requires_grad for p in body.layer3.parameters())
    assert isinstance(body.bn1, W.EvalBatchNorm2d) and isinstance(body.layer1[0].bn1, W.EvalBatchNorm2d)
    assert type(body.layer3[0].bn1) is torch.nn.BatchNorm2d
    model.train()
    assert not body.layer2[0].bn1.training and body.layer3[0].bn1.training
    stats = body.layer1[0].bn1.running_mean.clone()
    g = torch.Generator().manual_seed(0)
    images = [torch.rand(3, TILE, TILE, generator=g)]
    targets = [{"boxes": torch.tensor([[10.0, 10.0, 50.0, 40.0]]), "labels": torch.tensor([1])}]
    sum(model(images, targets).values()).backward()
    assert torch.equal(body.layer1[0].bn1.running_mean, stats)
    # the state dict is unchanged in form: a checkpoint of a frozen model loads into a fresh one
    assert list(model.state_dict()) == keys
    build_model(spec).load_state_dict(model.state_dict(), strict=True)


@pytest.mark.parametrize("arch,stages", [("ssdlite", 5), ("fasterrcnn_mobilenet", 5), ("fcos_resnet18", 4),
                                         ("fcos_lite", 3)])
def test_freeze_counts_stages(arch, stages):
    model = build_model(spec_for(arch))
    assert len(W.split_backbone(model)) == stages + 1
    with pytest.raises(ValueError, match=f"0..{stages}"):
        W.freeze(model, backbone_stages=stages + 1)
    assert W.freeze(model, backbone_stages=0) == 0
    n = W.freeze(model, backbone_stages=-1, batchnorm="all")
    assert n > 0
    assert W.freeze(model, backbone_stages=-1) == 0  # already frozen
    model.train()
    assert not any(m.training for m in model.modules() if isinstance(m, torch.nn.BatchNorm2d)
                   and any(m is x for x in _body_modules(model)))


def _body_modules(model):
    for stage in W.split_backbone(model):
        for m in stage:
            yield from m.modules()


@pytest.mark.parametrize("bands", [1, 2, 3, 4, 8])
def test_band_adaptation_keeps_the_response_to_a_flat_image(bands):
    """One rule (models.adapt_input_conv) for new models and loaded weights: the sum over input
    bands of each filter is kept, so a flat image gives the same response; one band is the sum
    of the RGB filters (timm's adapt_input_conv), and shared bands keep their filters."""
    from detector.train.models import adapt_input_conv

    w = torch.randn(16, 3, 7, 7, generator=torch.Generator().manual_seed(0))
    out = adapt_input_conv(w, bands)
    assert out.shape == (16, bands, 7, 7)
    torch.testing.assert_close(out.sum(1), w.sum(1))
    if bands == 1:
        torch.testing.assert_close(out[:, 0], w.sum(1))
    if bands >= 3:
        torch.testing.assert_close(out[:, :3], w * 3 / bands)
