"""The method registry: registration, selection, creation and entry-point discovery."""
from __future__ import annotations

import sys
import textwrap

import numpy as np
import pytest

import fusionbench.methods as methods
from fusionbench.methods import (FusionMethod, RegistrationMethod, create_method, default_registration,
                                 get_method_info, list_methods, load_plugins, register_method, resolve_methods)
from fusionbench.pipeline import Pipeline


@pytest.fixture
def scratch_registry():
    load_plugins()  # snapshot the full registry, not whatever was imported so far
    before = dict(methods._REGISTRY)
    yield
    methods._REGISTRY.clear()
    methods._REGISTRY.update(before)


def test_reference_methods_are_registered_with_their_roles():
    assert {"average", "maximum", "identity"} <= set(list_methods())
    assert get_method_info("average").role == "fusion"
    assert get_method_info("identity").role == "registration"
    assert "identity" in list_methods(role="registration") and "identity" not in resolve_methods("all")
    pat = np.array([[0.0, 1.0], [0.5, 0.25]], np.float32)
    mri = np.array([[1.0, 0.0], [0.5, 0.75]], np.float32)
    np.testing.assert_array_equal(create_method("average").fuse(pat, mri), [[0.5, 0.5], [0.5, 0.5]])
    np.testing.assert_array_equal(create_method("maximum").fuse(pat, mri), [[1.0, 1.0], [0.5, 0.75]])
    out = Pipeline(create_method("average"), create_method("identity")).run(pat, mri)
    assert not out["flow"].any() and out["flow"].shape == (2, 2, 2)
    np.testing.assert_array_equal(out["fused"], [[0.5, 0.5], [0.5, 0.5]])


def test_pipeline_registers_first_and_checks_what_methods_return(scratch_registry):
    class Shift(RegistrationMethod):  # moves the moving image one column left, as warp would
        def register(self, moving, fixed):
            flow = np.zeros((2, *fixed.shape), np.float32)
            flow[1] = 1.0
            return np.concatenate([moving[:, 1:], moving[:, -1:]], axis=1), flow

    class BadFlow(Shift):
        def register(self, moving, fixed):
            return moving, np.full((2, *fixed.shape), np.nan, np.float32)

    class TooBright(FusionMethod):
        def fuse(self, pat, mri):
            return pat + 1.5

    pat = np.array([[0.0, 1.0, 0.5]], np.float32)
    mri = np.array([[0.2, 0.2, 0.2]], np.float32)
    out = Pipeline(create_method("maximum"), Shift()).run(pat, mri)
    np.testing.assert_array_equal(out["registered"], [[1.0, 0.5, 0.5]])
    np.testing.assert_array_equal(out["fused"], [[1.0, 0.5, 0.5]])
    assert set(out["seconds"]) == {"registration", "fusion"}
    with pytest.raises(ValueError, match="BadFlow flow: NaN"):
        Pipeline(create_method("average"), BadFlow()).run(pat, mri)
    with pytest.raises(Exception, match="TooBright fused output"):
        Pipeline(TooBright()).run(pat, mri)


def test_a_plugin_declares_the_default_registration(scratch_registry):
    assert default_registration() == "p2m+vm"  # the pamrfuse plugin's protocol
    for name, info in list(methods._REGISTRY.items()):
        if info.default_registration:
            methods._REGISTRY[name] = methods.MethodInfo(**{**info.__dict__, "default_registration": False})
    assert default_registration() == "identity"

    @register_method("zz_reg_a", kind="registration", default_registration=True)
    class A(RegistrationMethod):
        pass

    assert default_registration() == "zz_reg_a"

    @register_method("zz_reg_b", kind="registration", default_registration=True)
    class B(RegistrationMethod):
        pass

    with pytest.raises(ValueError, match="several plugins"):
        default_registration()


def test_selection_by_alias_kind_pattern_and_name(scratch_registry):
    @register_method("zz_cnn", kind="cnn")
    class ZzCnn(FusionMethod):
        pass

    @register_method("zz_joint", kind="transformer", needs_alignment=False)
    class ZzJoint(FusionMethod, RegistrationMethod):
        pass

    @register_method("zz_joint_ablation", kind="transformer", needs_alignment=False, in_all=False)
    class ZzJointAblation(FusionMethod, RegistrationMethod):
        pass

    assert get_method_info("zz_joint").role == "joint"
    assert "zz_cnn" in resolve_methods("deep") and "zz_cnn" not in resolve_methods("classic")
    cnns = resolve_methods("cnn")
    assert "zz_cnn" in cnns and {get_method_info(n).kind for n in cnns} == {"cnn"}
    # joint methods are fusion methods too; variants marked in_all=False run only when selected
    assert "zz_joint" in resolve_methods("all") and "zz_joint" in resolve_methods("deep")
    assert "zz_joint_ablation" not in resolve_methods("all") + resolve_methods("deep")
    assert resolve_methods("zz_joint_ablation") == ["zz_joint_ablation"]
    assert resolve_methods("zz_*") == ["zz_cnn", "zz_joint", "zz_joint_ablation"]
    assert resolve_methods("maximum, average,maximum") == ["maximum", "average"]
    with pytest.raises(KeyError, match="unknown method 'nope'"):
        resolve_methods("average,nope")
    with pytest.raises(KeyError, match="matches no registered method"):
        resolve_methods("qq*")


def test_conflicting_or_invalid_registration_is_refused(scratch_registry):
    with pytest.raises(ValueError, match="unknown kind"):
        register_method("bad_kind", kind="quantum")(type("B", (FusionMethod,), {}))
    with pytest.raises(ValueError, match="already registered"):
        register_method("average")(type("Other", (FusionMethod,), {"__module__": "elsewhere"}))
    created = create_method("average")
    assert created.name == "average" and created.config() == {}


def _fake_distribution(root, module_name, method_name, entry_value=None, broken=False):
    """A module plus an installed-distribution record naming it in the fusionbench.methods group."""
    body = "raise ImportError('missing weights')\n" if broken else textwrap.dedent(f"""
        import numpy as np
        from fusionbench.methods import FusionMethod, register_method

        @register_method("{method_name}", kind="traditional", reference="test plugin")
        class PluginMin(FusionMethod):
            def fuse(self, pat, mri):
                return np.minimum(pat, mri)
        """)
    (root / f"{module_name}.py").write_text(body)
    dist = root / f"{module_name}_pkg-1.0.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {module_name}-pkg\nVersion: 1.0\n")
    (dist / "entry_points.txt").write_text(
        f"[fusionbench.methods]\n{module_name} = {entry_value or module_name}\n")


def test_entry_point_plugin_is_discovered(tmp_path, monkeypatch, scratch_registry):
    _fake_distribution(tmp_path, "fb_plugin_ok", "plugin_min")
    _fake_distribution(tmp_path, "fb_plugin_broken", "never", broken=True)
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.delitem(sys.modules, "fb_plugin_ok", raising=False)
    with pytest.warns(RuntimeWarning, match="fb_plugin_broken.*missing weights"):
        load_plugins(force=True)
    assert "plugin_min" in list_methods() and "never" not in list_methods()
    info = get_method_info("plugin_min")
    assert (info.kind, info.reference, info.source) == ("traditional", "test plugin", "fb_plugin_ok")
    fused = create_method("plugin_min").fuse(np.full((2, 2), 0.25, np.float32), np.eye(2, dtype=np.float32))
    np.testing.assert_array_equal(fused, [[0.25, 0.0], [0.0, 0.25]])
    assert "plugin_min" in resolve_methods("all")


def test_broken_method_module_is_skipped_with_a_warning(tmp_path, monkeypatch, scratch_registry):
    pkg = tmp_path / "zz_methods_pkg"
    pkg.mkdir()
    (pkg / "__init__.py").write_text(
        "from fusionbench.methods import import_method_modules\nimport_method_modules(__name__, __path__)\n")
    (pkg / "good.py").write_text(textwrap.dedent("""
        from fusionbench.methods import FusionMethod, register_method

        @register_method("zz_good", kind="traditional")
        class Good(FusionMethod):
            def fuse(self, pat, mri):
                return pat
    """))
    (pkg / "broken.py").write_text("raise ImportError('missing dependency xyz')\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    with pytest.warns(RuntimeWarning, match="zz_methods_pkg.broken failed to import: ImportError: missing"):
        __import__("zz_methods_pkg")
    assert "zz_good" in list_methods()
