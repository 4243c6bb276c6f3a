"""The top-level names other code relies on (DESIGN.md), imported lazily."""

from __future__ import annotations

import subprocess
import sys

import likewise


def test_top_level_names_resolve_to_their_modules():
    from likewise.export import load
    from likewise.index import Index
    from likewise.matching import Matcher, calibrate

    assert likewise.Index is Index and likewise.Matcher is Matcher
    assert likewise.calibrate is calibrate and likewise.load is load
    for name in likewise.__all__:
        assert getattr(likewise, name) is not None
    assert likewise.losses.SupConLoss.__name__ == "SupConLoss"
    assert {"MMC", "ITML", "LMNN", "NCA"} <= set(dir(likewise.linear))


def test_import_likewise_does_not_load_faiss_lightning_or_sklearn():
    code = (
        "import sys, likewise, likewise.serve, likewise.cli\n"
        "likewise.cli.build_parser()\n"
        "heavy = [m for m in ('faiss', 'lightning', 'sklearn', 'likewise.index', 'fastapi', 'uvicorn',"
        " 'pymilvus', 'prometheus_client') if m in sys.modules]\n"
        "assert not heavy, heavy\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr


def test_unknown_attribute_is_an_attribute_error():
    import pytest

    with pytest.raises(AttributeError, match="module 'likewise' has no attribute 'Nope'"):
        likewise.Nope  # noqa: B018


def test_library_core_does_not_import_lightning():
    """Losses, miners, evaluation and the exported model work without the trainer's Lightning."""
    code = (
        "import sys\n"
        "import likewise.losses, likewise.mining, likewise.evaluation, likewise.export\n"
        "import likewise.data, likewise.train.config, likewise.cli\n"
        "likewise.losses.TripletMarginLoss, likewise.evaluation.retrieval_metrics\n"
        "loaded = sorted(m for m in sys.modules if m.split('.')[0] in ('lightning', 'pytorch_lightning',"
        " 'lightning_fabric'))\n"
        "assert not loaded, loaded\n"
        "assert 'likewise.losses.triplet_margin' in sys.modules and 'likewise.export' in sys.modules\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
