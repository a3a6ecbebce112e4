"""Files from elsewhere (checkpoints, configs, annotation lists, installed plugins) cannot run code
or read outside the data they describe unless the user says so.

Every payload here would create a marker file if it ran; a control test shows that it does
when loaded unsafely, so the "marker absent" assertions can fail.
"""

from __future__ import annotations

import json
import pickle
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from PIL import Image

from lttoolkit.engine.checkpoint import UnsafeCheckpointError, load_checkpoint
from lttoolkit.engine.config import config_to_yaml, load_config
from lttoolkit.engine.datasets import build_datasets
from lttoolkit.errors import ConfigError, DataError
from lttoolkit.registry import DISABLE_ENV

from ._support import lttk_env, make_image_set, random_image


class CodeOnLoad:
    """Unpickling this runs ``exec``: the file it is in would create ``marker``."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (exec, (f"open({str(self.marker)!r}, 'w').close()",))


def crafted_checkpoint(path: Path, marker: Path, form: str) -> Path:
    """A file shaped like an lttoolkit checkpoint with a code-running object inside."""
    state = {"format": "lttoolkit-checkpoint-1", "epoch": 0, "model": {}, "recipe": {}, "config": {},
             "extra": CodeOnLoad(marker)}
    if form == "torch_save":
        torch.save(state, path)
    else:  # a bare pickle, as older tools wrote checkpoints
        with open(path, "wb") as stream:
            pickle.dump(state, stream, protocol=2)
    return path


FORMS = ["torch_save", "bare_pickle"]


def test_control_the_payload_runs_when_unpickled_unsafely(tmp_path):
    marker = tmp_path / "ran"
    path = crafted_checkpoint(tmp_path / "evil.pt", marker, "torch_save")
    torch.load(path, weights_only=False)
    assert marker.exists()


@pytest.mark.parametrize("form", FORMS)
def test_crafted_checkpoint_is_refused_by_load_checkpoint(tmp_path, form):
    marker = tmp_path / "ran"
    path = crafted_checkpoint(tmp_path / "evil.pt", marker, form)
    with pytest.raises(UnsafeCheckpointError) as caught:
        load_checkpoint(path)
    assert "refused to load" in str(caught.value) and "(it imports exec)" in str(caught.value)
    assert "nothing from it was executed" in str(caught.value)
    assert not marker.exists()


@pytest.mark.parametrize("form", FORMS)
def test_lttk_eval_and_predict_refuse_a_crafted_checkpoint(tmp_path, lttk_main, form):
    marker = tmp_path / "ran"
    path = crafted_checkpoint(tmp_path / "evil.pt", marker, form)
    image = tmp_path / "cat.png"
    random_image(np.random.default_rng(0)).save(image)
    for args in (["eval", path, "--device", "cpu"], ["predict", path, image]):
        code, out, err = lttk_main(*args)
        assert code == 2, (args, out, err)
        assert "error: UnsafeCheckpointError: refused to load" in err and str(path) in err
    assert not marker.exists()


@pytest.mark.parametrize("form", FORMS)
def test_lttk_train_resume_refuses_a_crafted_last_checkpoint(tmp_path, image_set, lttk_main, form):
    run_dir = tmp_path / "runs" / "run"
    run_dir.mkdir(parents=True)
    config_text = config_to_yaml(load_config(None, image_set.overrides(f"output_dir={run_dir.parent}", "name=run")))
    (run_dir / "config.yaml").write_text(config_text, encoding="utf-8")
    marker = tmp_path / "ran"
    crafted_checkpoint(run_dir / "last.pt", marker, form)
    code, out, err = lttk_main("train", "--resume", run_dir, "--quiet")
    assert code == 2, (out, err)
    assert "error: UnsafeCheckpointError: refused to load" in err and str(run_dir / "last.pt") in err
    assert not marker.exists()
    # The run folder is left as it was.
    assert sorted(p.name for p in run_dir.iterdir()) == ["config.yaml", "last.pt"]
    assert (run_dir / "config.yaml").read_text(encoding="utf-8") == config_text


# ----------------------------------------------------------------------------- YAML
def yaml_payload(marker: Path) -> str:
    return f'!!python/object/apply:os.system ["touch {marker}"]'


def test_control_the_yaml_payload_runs_when_loaded_unsafely(tmp_path):
    marker = tmp_path / "ran"
    yaml.unsafe_load(f"seed: {yaml_payload(marker)}\n")
    assert marker.exists()


@pytest.mark.parametrize("where", ["value", "document"])
def test_yaml_config_with_python_tags_is_refused_and_runs_nothing(tmp_path, lttk_main, where):
    marker = tmp_path / "ran"
    config = tmp_path / "evil.yaml"
    text = f"seed: {yaml_payload(marker)}\n" if where == "value" else yaml_payload(marker) + "\n"
    config.write_text(text, encoding="utf-8")
    with pytest.raises(ConfigError, match="is not valid YAML"):
        load_config(config)
    code, out, err = lttk_main("train", config, f"output_dir={tmp_path / 'runs'}", "--quiet")
    assert code == 2, (out, err)
    assert f"config file '{config}' is not valid YAML" in err
    assert not marker.exists() and not (tmp_path / "runs").exists()


def test_override_with_python_tag_is_refused_and_runs_nothing(tmp_path, lttk_main):
    marker = tmp_path / "ran"
    code, out, err = lttk_main("train", f"seed={yaml_payload(marker)}", f"output_dir={tmp_path / 'runs'}", "--quiet")
    assert code == 2, (out, err)
    assert "error: ConfigError: override 'seed=" in err and "cannot parse the value" in err
    assert not marker.exists() and not (tmp_path / "runs").exists()


def test_resume_with_a_tampered_config_is_refused_and_runs_nothing(tmp_path, lttk_main):
    run_dir = tmp_path / "runs" / "run"
    run_dir.mkdir(parents=True)
    marker = tmp_path / "ran"
    (run_dir / "config.yaml").write_text(f"seed: {yaml_payload(marker)}\n", encoding="utf-8")
    (run_dir / "last.pt").write_bytes(b"never read")
    code, out, err = lttk_main("train", "--resume", run_dir, "--quiet")
    assert code == 2, (out, err)
    assert "is not valid YAML" in err
    assert not marker.exists()


# ----------------------------------------------------------------------------- annotation paths
@pytest.fixture
def outside_image(tmp_path: Path) -> Path:
    """An image next to (not inside) the image root ``tmp_path/images``."""
    path = tmp_path / "outside.png"
    random_image(np.random.default_rng(7)).save(path)
    return path


ESCAPES = {
    "parent": ("../outside.png", "climbs out of the root"),
    "nested-parent": ("train/../../outside.png", "climbs out of the root"),
    "windows-parent": ("..\\outside.png", "climbs out of the root"),
    "absolute": (None, "is absolute"),  # the image's absolute path
}


@pytest.mark.parametrize("dataset", ["json", "text_list"])
@pytest.mark.parametrize("escape", sorted(ESCAPES))
def test_annotation_path_leaving_the_root_is_refused(tmp_path, outside_image, dataset, escape):
    images = make_image_set(tmp_path / "images", dataset=dataset)
    entry, problem = ESCAPES[escape]
    entry = entry or str(outside_image)
    images.train[4] = (entry, images.train[4][1])
    images.write()
    cfg = load_config(None, images.overrides())
    with pytest.raises(DataError) as caught:
        build_datasets(cfg.data)
    message = str(caught.value)
    assert str(images.annotation_file("train")) in message and "entry 4" in message
    assert repr(entry) in message and problem in message
    assert "allow_outside_root" in message


@pytest.mark.parametrize("dataset", ["json", "text_list"])
@pytest.mark.parametrize("escape", ["parent", "nested-parent", "absolute"])
def test_annotation_path_leaving_the_root_loads_when_allowed(tmp_path, outside_image, dataset, escape):
    images = make_image_set(tmp_path / "images", dataset=dataset)
    entry = ESCAPES[escape][0] or str(outside_image)
    images.train[4] = (entry, images.train[4][1])
    images.write()
    cfg = load_config(None, images.overrides("data.allow_outside_root=true"))
    data = build_datasets(cfg.data)
    loaded = np.asarray(data.train.load_image(4))
    with Image.open(outside_image) as expected:
        assert np.array_equal(loaded, np.asarray(expected.convert("RGB")))


def test_escaping_annotation_stops_lttk_train_before_the_run(tmp_path, outside_image, lttk_main):
    images = make_image_set(tmp_path / "images")
    images.test[0] = ("../outside.png", 0)
    images.write()
    code, out, err = lttk_main("train", *images.overrides(f"output_dir={tmp_path / 'runs'}"), "--quiet")
    assert code == 2, (out, err)
    assert "'../outside.png' climbs out of the root" in err and "allow_outside_root" in err
    assert not (tmp_path / "runs").exists()


# ----------------------------------------------------------------------------- installed plugins
PLUGIN_CODE = '''
"""An installed plugin distribution: a schedule, and a trace that it was imported."""
import os
from pathlib import Path

from lttoolkit.registry import SCHEDULES

Path(os.environ["RELIABILITY_PLUGIN_MARKER"]).touch()


@SCHEDULES.register(name="reliability_half")
class Half:
    """Always one half."""

    def __call__(self, epoch, max_epochs):
        return 0.5
'''

PROBE = '''
import json
from lttoolkit.registry import SCHEDULES
out = {"listed": "reliability_half" in SCHEDULES.list(),
       "sources": sorted({e.source for e in SCHEDULES.entries(load="plugins")})}
try:
    out["built"] = SCHEDULES.build("reliability_half")(3, 10)
except Exception as exc:
    out["built"] = f"{type(exc).__name__}: {exc}"
print(json.dumps(out))
'''


@pytest.fixture
def plugin_site(tmp_path: Path) -> Path:
    """A folder holding an 'installed' distribution (module + dist-info with an entry point)."""
    site = tmp_path / "site"
    info = site / "lttk_reliability_plugin-0.1.dist-info"
    info.mkdir(parents=True)
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: lttk-reliability-plugin\nVersion: 0.1\n")
    (info / "entry_points.txt").write_text("[lttoolkit.schedules]\nreliability_half = lttk_reliability_plugin:Half\n")
    (site / "lttk_reliability_plugin.py").write_text(textwrap.dedent(PLUGIN_CODE))
    return site


@pytest.mark.parametrize("disabled", [False, True])
def test_disable_env_hides_an_installed_plugin_and_never_imports_it(tmp_path, plugin_site, disabled):
    marker = tmp_path / "imported"
    env = lttk_env(plugin_site, RELIABILITY_PLUGIN_MARKER=str(marker), **({DISABLE_ENV: "1"} if disabled else {}))
    done = subprocess.run([sys.executable, "-c", PROBE], capture_output=True, text=True, env=env, timeout=120)
    assert done.returncode == 0, done.stderr
    seen = json.loads(done.stdout)
    if disabled:
        assert seen["listed"] is False and seen["sources"] == ["builtin"]
        assert seen["built"].startswith("UnknownComponentError: unknown schedule 'reliability_half'")
        assert not marker.exists()
    else:
        assert seen["listed"] is True and "lttk-reliability-plugin 0.1" in seen["sources"]
        assert seen["built"] == 0.5
        assert marker.exists()


# ----------------------------------------------------------------------------- modules a file names (issue 17, item 3)
def downloaded_checkpoint(finished_run, folder: Path, marker: Path) -> Path:
    """A plain-data checkpoint whose config lists ``pwn_mod``, with ``pwn_mod.py`` (which would
    create ``marker``) beside it, as in a downloaded folder."""
    from lttoolkit.engine.checkpoint import save_checkpoint

    folder.mkdir(parents=True, exist_ok=True)
    state = load_checkpoint(finished_run[0] / "last.pt")
    state["config"]["plugins"] = ["pwn_mod"]
    (folder / "pwn_mod.py").write_text(f"open({str(marker)!r}, 'w').close()\n", encoding="utf-8")
    return save_checkpoint(state, folder / "downloaded.pt")


def test_control_the_module_beside_the_checkpoint_runs_when_imported(tmp_path, finished_run):
    marker = tmp_path / "ran"
    downloaded_checkpoint(finished_run, tmp_path / "download", marker)
    done = subprocess.run([sys.executable, "-c", "import pwn_mod"], cwd=tmp_path / "download", timeout=60)
    assert done.returncode == 0 and marker.exists()


def test_python_m_lttoolkit_eval_never_imports_what_a_checkpoint_names(tmp_path, finished_run):
    # `python -m` puts the current folder on sys.path: the module beside the file would be found.
    marker = tmp_path / "ran"
    checkpoint = downloaded_checkpoint(finished_run, tmp_path / "download", marker)
    done = subprocess.run([sys.executable, "-m", "lttoolkit", "eval", checkpoint.name, "--device", "cpu", "--json"],
                          cwd=checkpoint.parent, env=lttk_env(), capture_output=True, text=True, timeout=240)
    assert done.returncode == 0, done.stderr
    assert not marker.exists()


@pytest.mark.parametrize("disabled", [False, True])
def test_predict_and_analyze_never_import_what_a_checkpoint_names(tmp_path, finished_run, lttk_main, monkeypatch,
                                                                  disabled):
    marker = tmp_path / "ran"
    checkpoint = downloaded_checkpoint(finished_run, tmp_path / "download", marker)
    image = tmp_path / "download" / "cat.png"
    random_image(np.random.default_rng(0)).save(image)
    monkeypatch.chdir(checkpoint.parent)
    monkeypatch.syspath_prepend(str(checkpoint.parent))  # what `python -m` does with the current folder
    if disabled:
        monkeypatch.setenv(DISABLE_ENV, "1")
    for args in (["predict", checkpoint, image], ["analyze", checkpoint], ["eval", checkpoint, "--device", "cpu"]):
        code, out, err = lttk_main(*args)
        assert code == 0, (args, out, err)
    assert not marker.exists()
    assert "pwn_mod" not in sys.modules


def test_a_configs_plugins_are_not_imported_when_plugins_are_disabled(tmp_path, lttk_main, monkeypatch):
    marker = tmp_path / "ran"
    (tmp_path / "cfg_mod.py").write_text(f"open({str(marker)!r}, 'w').close()\n", encoding="utf-8")
    monkeypatch.syspath_prepend(str(tmp_path))
    config = tmp_path / "config.yaml"
    config.write_text("plugins: [cfg_mod]\ntrain: {epochs: 1, max_steps_per_epoch: 1}\n", encoding="utf-8")
    monkeypatch.setenv(DISABLE_ENV, "1")
    code, out, err = lttk_main("train", config, f"output_dir={tmp_path / 'runs'}", "--quiet")
    assert code == 2, (out, err)
    assert "plugins ['cfg_mod']" in err and "LTTK_DISABLE_PLUGINS" in err and "--plugin cfg_mod" in err
    assert not marker.exists() and "cfg_mod" not in sys.modules
    assert not (tmp_path / "runs").exists()


def test_a_checkpoint_that_needs_a_plugin_says_which_and_how_to_load_it(tmp_path, image_set, stall_plugin_loaded,
                                                                       lttk_main):
    from lttoolkit.engine.trainer import train
    from lttoolkit.registry import SCHEDULES

    from ._support import STALL_SCHEDULE

    train(None, image_set.overrides(f"plugins=[{stall_plugin_loaded}]", f"model.schedule={STALL_SCHEDULE}",
                                    f"output_dir={tmp_path / 'runs'}", "name=run"), progress=False)
    checkpoint = tmp_path / "runs" / "run" / "last.pt"
    SCHEDULES.unregister(STALL_SCHEDULE)  # as in a fresh process: the plugin module is not loaded
    sys.modules.pop(stall_plugin_loaded)
    code, out, err = lttk_main("eval", checkpoint, "--device", "cpu")
    assert code == 2, (out, err)
    assert f"needs schedule '{STALL_SCHEDULE}'" in err and f"--plugin {stall_plugin_loaded}" in err
    assert "never imports" in err
    assert stall_plugin_loaded not in sys.modules
    code, out, err = lttk_main("--plugin", stall_plugin_loaded, "eval", checkpoint, "--device", "cpu")
    assert code == 0, (out, err)
