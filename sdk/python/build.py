"""Build a Python plugin into a Wasmgate component:

    python3 sdk/python/build.py PLUGIN_DIR OUT.wasm

PLUGIN_DIR has a pyproject.toml naming the plugin (``[project]`` name and version) and, under
``[tool.wasmgate]``, its module, the JSON Schema of its config and the capabilities it
imports (``log`` always); name, version and schema are embedded in the component as its
``wasmgate-manifest`` custom section, which the gateway and ``wasmgate plugin inspect`` read.

The component is built for a world of the capabilities the plugin names rather than the
whole ``wasmgate:plugin`` world: componentize-py imports everything its world offers, and a
plugin importing ``http-outbound`` is called asynchronously by the gateway, which costs more.
"""

import json
import pathlib
import re
import subprocess
import sys
import tempfile
import tomllib

SDK = pathlib.Path(__file__).resolve().parent
WIT = SDK.parent.parent / "wit"


def custom_section(name, payload):
    def leb(n):
        out = bytearray()
        while True:
            b = n & 0x7F
            n >>= 7
            out.append(b | (0x80 if n else 0))
            if not n:
                return bytes(out)

    body = leb(len(name)) + name + payload
    return b"\x00" + leb(len(body)) + body


def world(capabilities, into):
    """A WIT folder whose world imports ``capabilities`` and exports the policy."""
    contract = (WIT / "plugin.wit").read_text()
    version = re.search(r"^package wasmgate:plugin@([0-9.]+);", contract, re.M).group(1)
    deps = pathlib.Path(into) / "deps" / "plugin"
    deps.mkdir(parents=True)
    (deps / "plugin.wit").write_text(contract)
    imports = "".join(f"    import wasmgate:plugin/{c}@{version};\n" for c in ["log", *capabilities])
    (pathlib.Path(into) / "world.wit").write_text(
        f"package wasmgate:app;\n\nworld plugin {{\n{imports}    export wasmgate:plugin/policy@{version};\n}}\n")
    return into


def main():
    if len(sys.argv) != 3:
        sys.exit("usage: python3 sdk/python/build.py PLUGIN_DIR OUT.wasm")
    plugin_dir, out = pathlib.Path(sys.argv[1]), pathlib.Path(sys.argv[2])
    project = tomllib.loads((plugin_dir / "pyproject.toml").read_text())
    settings = project.get("tool", {}).get("wasmgate", {})
    manifest = {"name": project["project"]["name"], "version": project["project"]["version"],
                "language": "python"}
    if "schema" in settings:
                manifest["config_schema"] = json.loads((plugin_dir / settings["schema"]).read_text())
    out.parent.mkdir(parents=True, exist_ok=True)
    capabilities = [c for c in settings.get("capabilities", []) if c != "log"]
    with tempfile.TemporaryDirectory() as tmp:
        subprocess.run(
            ["componentize-py", "-d", world(capabilities, tmp), "-w", "plugin", "componentize",
             "-p", str(plugin_dir), "-p", str(SDK), settings.get("module", "app"), "-o", str(out)],
            check=True, stdout=subprocess.DEVNULL,
        )
    with out.open("ab") as f:
        f.write(custom_section(b"wasmgate-manifest", json.dumps(manifest).encode()))
    print(f"{out}: {manifest['name']} {manifest['version']} ({out.stat().st_size / 1e6:.1f} MB)")


if __name__ == "__main__":
    main()
