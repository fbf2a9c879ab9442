#!/usr/bin/env python3
"""Drives meta-ocimux with BitBake's own `bb` library (from the bitbake-setup
package, without OE-core): parses the layer's configuration, recipes and
class under a datastore set up as a multiconfig build sets it, and runs their
tasks with bb.build.exec_func. tests/it/layer.rs calls it and checks what it
reports and what the tasks wrote.

Stand-ins (tests/layer/standins/): OE-core's bitbake.conf (only the variables
read), nopackages, native, nativesdk, cargo and externalsrc; and the
`hashserv` module, which the package leaves out and only bb.siggen's hash
equivalence clients use. Each says so in its header.

Usage: harness.py parse
       harness.py run-class TOPDIR [LINE ...]
         (the recipe CLASS_RECIPE, LINEs appended, written under TOPDIR/recipes)
       harness.py generate-registry TOPDIR [VAR=VALUE ...]
Output: one JSON object on stdout; BitBake's messages on stderr; exit 1 when
a task fails (bb.fatal), with its message on stderr.
"""

import json
import logging
import os
import sys
import tempfile
import types

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
LAYER = os.path.join(ROOT, "yocto", "meta-ocimux")
STANDINS = os.path.join(HERE, "standins")

# STAND-IN for the hashserv package (not in bitbake-setup): bb.siggen
# imports hashserv and hashserv.client at load; nothing here asks a hash
# server, so both are empty.
_hashserv = types.ModuleType("hashserv")
_hashserv.__path__ = []
_hashserv.client = types.ModuleType("hashserv.client")
sys.modules.setdefault("hashserv", _hashserv)
sys.modules.setdefault("hashserv.client", _hashserv.client)

import bb  # noqa: E402
import bb.build  # noqa: E402
import bb.data  # noqa: E402
import bb.msg  # noqa: E402
import bb.parse  # noqa: E402
import bb.siggen  # noqa: E402
import bb.utils  # noqa: E402

# The multiconfigs of the test's build, as conf/local.conf would list them.
MULTICONFIGS = "container-aarch64 container-x86-64 container-arm"


def log_to_stderr():
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(levelname)s: %(message)s"))
    logger = logging.getLogger("BitBake")
    logger.addHandler(handler)
    logger.setLevel(logging.DEBUG if os.environ.get("HARNESS_DEBUG") else logging.INFO)


def datastore(topdir, tmpdir, settings=()):
    """A datastore as the cooker leaves one for the default multiconfig of a
    build with MULTICONFIGS: BBPATH, TOPDIR, TMPDIR, DEPLOY_DIR_IMAGE,
    MCNAME, BBMULTICONFIG, PATH (ocimux-native's binary first), then the
    stand-in bitbake.conf, then `settings` (VAR=VALUE or VAR[flag]=VALUE)."""
    d = bb.data.init()
    d.setVar("BBPATH", f"{STANDINS}:{LAYER}")
    d.setVar("TOPDIR", topdir)
    d.setVar("TMPDIR", tmpdir)
    d.setVar("DEPLOY_DIR_IMAGE", os.path.join(tmpdir, "deploy", "images", "qemux86-64"))
    d.setVar("MCNAME", "")
    d.setVar("BBMULTICONFIG", MULTICONFIGS)
    native = os.environ.get("OCIMUX_NATIVE_BINDIR", "")
    d.setVar("PATH", os.pathsep.join(p for p in (native, os.environ.get("PATH", "")) if p))
    d.setVar("__bbclasstype", "recipe")
    bb.parse.handle(os.path.join(STANDINS, "conf", "bitbake.conf"), d, True)
    for s in settings:
        name, value = s.split("=", 1)
        if name.endswith("]") and "[" in name:
            var, flag = name[:-1].split("[", 1)
            d.setVarFlag(var, flag, value)
        else:
            d.setVar(name, value)
    # As the cooker does before parsing recipes.
    bb.parse.siggen = bb.siggen.init(d)
    return d


def parse(recipe, d):
    """Every variant of recipe (BBCLASSEXTEND's too), by name."""
    return bb.parse.handle(recipe, bb.data.createCopy(d))


def tasks_of(d):
    """Each task with what it runs after and before, and its dependency flags."""
    out = {}
    for task in d.getVar("__BBTASKS", False) or []:
        flags = d.getVarFlags(task) or {}
        out[task] = {
            k: (v if isinstance(v, (str, list)) else str(v))
            for k, v in flags.items()
            if k in ("deps", "depends", "mcdepends", "stamp-extra-info", "nostamp")
        }
    return out


def cmd_parse():
    with tempfile.TemporaryDirectory() as tmp:
        topdir = os.path.join(tmp, "build")
        d = datastore(topdir, os.path.join(topdir, "tmp"))
        layer = bb.data.createCopy(d)
        bb.parse.handle(os.path.join(LAYER, "conf", "layer.conf"), layer, True)
        report = {
            "layer": {
                v: layer.getVar(v)
                for v in ("BBFILE_COLLECTIONS", "LAYERDEPENDS_ocimux", "LAYERSERIES_COMPAT_ocimux",
                          "BBFILE_PATTERN_ocimux", "BBFILES")
            }
        }
        recipe = os.path.join(LAYER, "recipes-devtools", "ocimux", "ocimux_0.1.0.bb")
        variants = parse(recipe, d)
        report["recipe"] = {
            name or "target": {
                "PN": v.getVar("PN"),
                "inherits": [os.path.basename(c) for c in v.getVar("__inherit_cache", False) or []],
                "SRC_URI": (v.getVar("SRC_URI") or "").split(),
                "checksums": {
                    k: v.getVarFlag("SRC_URI", k)
                    for k in (v.getVarFlags("SRC_URI") or {})
                    if k.endswith(".sha256sum")
                },
                "LICENSE": v.getVar("LICENSE"),
                "LIC_FILES_CHKSUM": v.getVar("LIC_FILES_CHKSUM"),
                "EXTERNALSRC": v.getVar("EXTERNALSRC"),
                "BBCLASSEXTEND": v.getVar("BBCLASSEXTEND"),
                "tasks": tasks_of(v),
            }
            for name, v in variants.items()
        }
        app = os.path.join(tmp, "app-container-multiarch.bb")
        with open(app, "w") as f:
            f.write(CLASS_RECIPE)
        class_d = parse(app, d)[""]
        report["class"] = {
            "PN": class_d.getVar("PN"),
            "OCI_MULTIARCH_OUTPUT": class_d.getVar("OCI_MULTIARCH_OUTPUT"),
            "DEPLOY_DIR_IMAGE": class_d.getVar("DEPLOY_DIR_IMAGE"),
            "tasks": tasks_of(class_d),
        }
        registry = os.path.join(LAYER, "recipes-containers", "ocimux-registry", "ocimux-registry-index.bb")
        reg_d = parse(registry, d)[""]
        report["registry"] = {
            "PN": reg_d.getVar("PN"),
            "tasks": tasks_of(reg_d),
            "settings": {
                v: reg_d.getVar(v)
                for v in ("CONTAINER_REGISTRY_URL", "CONTAINER_REGISTRY_NAMESPACE",
                          "CONTAINER_REGISTRY_INSECURE", "CONTAINER_REGISTRY_TAG_STRATEGY",
                          "OCIMUX_REGISTRY_DIR")
            },
        }
    return report


# The recipe a user writes to merge app-container's images, as the class's
# header shows (three platforms, one a 32-bit arm machine).
CLASS_RECIPE = """\
inherit ocimux-multiarch
OCI_MULTIARCH_RECIPE = "app-container"
OCI_MULTIARCH_PLATFORMS = "aarch64 x86_64 arm"
OCI_MULTIARCH_MC[aarch64] = "container-aarch64"
OCI_MULTIARCH_MC[x86_64] = "container-x86-64"
OCI_MULTIARCH_MC[arm] = "container-arm"
OCI_MULTIARCH_MACHINE[arm] = "qemuarm"
"""


def run_tasks(recipe, tasks, topdir, settings):
    d = datastore(topdir, os.path.join(topdir, "tmp"), settings)
    # scripts/layer_bench.py: another layer's classes too (meta-virtualization's
    # oci-multiarch.bbclass, for the baseline).
    extra = os.environ.get("HARNESS_EXTRA_BBPATH")
    if extra:
        d.setVar("BBPATH", d.getVar("BBPATH") + ":" + extra)
    rd = parse(recipe, d)[""]
    for task in tasks:
        try:
            bb.build.exec_func(task, rd)
        except bb.BBHandledException:
            sys.exit(1)
        except bb.build.FuncFailed as e:
            sys.stderr.write(f"ERROR: {e}\n")
            sys.exit(1)
    return {
        v: rd.getVar(v)
        for v in ("OCI_MULTIARCH_OUTPUT", "OCIMUX_REGISTRY_DIR", "PN")
        if rd.getVar(v) is not None
    }


def main(argv):
    log_to_stderr()
    match argv:
        case ["parse"]:
            report = cmd_parse()
        case ["run-class", topdir, *lines]:
            recipe = os.path.join(topdir, "recipes", "app-container-multiarch.bb")
            os.makedirs(os.path.dirname(recipe), exist_ok=True)
            with open(recipe, "w") as f:
                inherit = os.environ.get("HARNESS_CLASS", "ocimux-multiarch")
                recipe_text = CLASS_RECIPE.replace("inherit ocimux-multiarch", f"inherit {inherit}")
                f.write(recipe_text + "".join(line + "\n" for line in lines))
            report = run_tasks(recipe, ["do_create_multiarch_index", "do_deploy"], topdir, ())
        case ["generate-registry", topdir, *settings]:
            recipe = os.path.join(LAYER, "recipes-containers", "ocimux-registry", "ocimux-registry-index.bb")
            report = run_tasks(recipe, ["do_generate_registry_script"], topdir, settings)
        case _:
            sys.exit(__doc__)
    json.dump(report, sys.stdout, indent=1, sort_keys=True)
    print()


if __name__ == "__main__":
    main(sys.argv[1:])
