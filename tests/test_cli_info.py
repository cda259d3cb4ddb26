import json

import pytest

from nasx.cli import main

TINY = "basicblock_8_1-2-2-2"


def test_info_json_has_integer_params_and_macs(capsys):
    assert main(["info", "--backbone", TINY, "--classes", "3", "--input", "64x96", "--fpn-channels", "16",
                 "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert isinstance(report["params"], int) and isinstance(report["macs"], int)
    assert report["params"] == sum(p["params"] for p in report["parts"].values())
    assert report["macs"] == sum(p["macs"] for p in report["parts"].values())
    assert all(p["macs"] > 0 for p in report["parts"].values())
    assert report["input"] == [64, 96] and report["detector"] == "fcos"


def test_info_macs_scale_with_the_input(capsys):
    sizes = []
    for size in ("64x64", "128x128"):
        main(["info", "--detector", "retinanet", "--backbone", TINY, "--input", size, "--fpn-channels", "16",
              "--json"])
        sizes.append(json.loads(capsys.readouterr().out)["macs"])
    assert 3.5 < sizes[1] / sizes[0] < 4.5  # ~ proportional to the pixels


def test_info_of_a_searched_decoder(capsys):
    """The builder the NAS-FCOS search writes into its checkpoints, by name from the CLI."""
    counts = {}
    for arch in ("baseline", "nas_fcos"):
        assert main(["info", "--detector", "nas_fcos", "--backbone", TINY, "--arch", arch, "--classes", "3",
                     "--input", "64", "--fpn-channels", "16", "--json"]) == 0
        counts[arch] = json.loads(capsys.readouterr().out)["parts"]
    assert counts["baseline"]["backbone"] == counts["nas_fcos"]["backbone"]
    assert counts["baseline"]["neck"]["params"] != counts["nas_fcos"]["neck"]["params"]


def test_info_table_and_latency(capsys):
    assert main(["info", "--detector", "ssdlite", "--backbone", "mb8_c8s1:k3e1-c16s2:k3e3-c16s2:k3e3-c24s2:k3e3-c32s2:k3e3_64",
                 "--classes", "2", "--input", "64", "--latency", "--repeats", "2"]) == 0
    out = capsys.readouterr().out
    for word in ("backbone", "neck", "head", "total", "latency", "GMACs"):
        assert word in out


@pytest.mark.parametrize("argv,message", [
    (["--backbone", "bottleneck_64_13"], "stage 1 has '3' at position 2"),
    (["--backbone", "resnet50", "--input", "800by1088"], "--input: expected HxW"),
    (["--backbone", "resnet50", "--classes", "0"], "--classes: expected a positive"),
    (["--detector", "ssdlite", "--backbone", "mobilenet_v2", "--fpn-channels", "64"], "ssdlite has no FPN"),
    (["--backbone", "resnet50", "--arch", "baseline"], "--arch is the decoder of --detector nas_fcos"),
    (["--detector", "nas_fcos", "--backbone", TINY, "--arch", "[[1]]"], "invalid NAS-FCOS architecture"),
])
def test_info_bad_input_is_one_line_and_exit_1(capsys, argv, message):
    assert main(["info", *argv]) == 1
    err = capsys.readouterr().err
    assert err.startswith("nasx info: error: ") and message in err and err.count("\n") == 1
