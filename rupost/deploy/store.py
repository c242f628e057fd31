"""The generations on a node's disk.

Every deploy renders into a new *generation* directory; the live configuration is the
``current`` symlink, swapped atomically, and earlier generations stay intact for a
rollback. Installed files refer to each other through ``current`` (never through a
generation's own path), so a component whose files did not change has byte-identical
files in the new generation and needs no reload; a long-running helper such as postfix's
proxymap keeps matching the paths it was started with. Hashes are taken with that prefix
replaced by a token, so an unchanged configuration hashes the same whichever generation
it lands in and a no-change redeploy touches nothing. Before the switch the same files
are materialised once more in a scratch directory that they refer to instead, and the
checkers run there: the checked configuration is the installed one with only the
directory prefix changed.
"""
from __future__ import annotations

import contextlib
import difflib
import grp
import json
import os
import shutil
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from adapters import RenderedFile

from ..errors import DeployError
from ..paths import GENERATION_TOKEN, Layout
from .plan import TLS, Plan, sha256

MANIFEST = "manifest.json"


@dataclass(frozen=True)
class DriftedFile:
    component: str
    path: str
    state: str  # modified | missing

    def as_dict(self) -> dict[str, str]:
        return {"component": self.component, "path": self.path, "state": self.state}


class GenerationStore:
    def __init__(self, layout: Layout) -> None:
        self.layout = layout

    # ------------------------------------------------------------ reading
    def live_dir(self) -> Path | None:
        """The live generation's directory, None before the first deploy."""
        if not self.layout.current.exists():
            return None
        try:
            return self.layout.current.resolve(strict=True)
        except OSError:
            return self.layout.current

    def live_manifest(self) -> dict | None:
        try:
            return json.loads((self.layout.current / MANIFEST).read_text())
        except (OSError, ValueError):
            return None

    def live_number(self) -> int | None:
        return (self.live_manifest() or {}).get("number")

    def numbers(self) -> list[int]:
        if not self.layout.generations.is_dir():
            return []
        return sorted(int(p.name) for p in self.layout.generations.iterdir() if p.name.isdigit())

    def path(self, number: int) -> Path:
        return self.layout.generations / f"{number:06d}"

    def changed_components(self, hashes: dict[str, dict[str, str]]) -> list[str]:
        live = (self.live_manifest() or {}).get("hashes", {})
        return [component for component in hashes if hashes[component] != live.get(component)]

    def diff(self, component: str, files: list[RenderedFile]) -> str:
        """Unified diff of the live files against `files` (token form); private keys are not shown."""
        out: list[str] = []
        for f in files:
            try:
                old = (self.layout.current / component / f.path).read_text()
                old = old.replace(str(self.layout.current), GENERATION_TOKEN)
            except (OSError, UnicodeDecodeError):
                old = ""
            new = f.content
            if component == TLS and f.path.endswith(".key"):
                old, new = ("(private key)\n" if old else ""), "(private key, changed)\n"
            if old != new:
                out += difflib.unified_diff(old.splitlines(True), new.splitlines(True),
                                            f"live/{component}/{f.path}", f"new/{component}/{f.path}")
        return "".join(out)

    def drift(self) -> list[DriftedFile]:
        """Installed files that differ from what the live generation recorded: edited by
        hand (modified) or deleted (missing)."""
        manifest = self.live_manifest()
        if not manifest:
            return []
        prefix = str(self.layout.current)
        found = []
        for component, files in sorted(manifest["hashes"].items()):
            for path, recorded in sorted(files.items()):
                try:
                    content = (self.layout.current / component / path).read_text()
                except FileNotFoundError:
                    found.append(DriftedFile(component, path, "missing"))
                    continue
                except (OSError, UnicodeDecodeError):
                    content = ""
                if sha256(content.replace(prefix, GENERATION_TOKEN)) != recorded:
                    found.append(DriftedFile(component, path, "modified"))
        return found

    def refuse_drift(self, plan: Plan, force: bool) -> list[DriftedFile]:
        """Refuse to overwrite hand-edited files unless forced; forced, they count as changed."""
        drifted = self.drift()
        if drifted and not force:
            listing = ", ".join(f"{d.component}/{d.path} ({d.state})" for d in drifted)
            raise DeployError(f"installed files were changed by hand: {listing}; the deploy would overwrite "
                              "them. Keep what you need (in a custom template), then deploy with --force")
        for component in dict.fromkeys(d.component for d in drifted):
            if component not in plan.changed:
                plan.changed.append(component)
        return drifted

    def plan_of(self, number: int) -> Plan:
        """A kept generation as a plan (for a rollback by hand)."""
        gen_dir = self.path(number)
        try:
            manifest = json.loads((gen_dir / MANIFEST).read_text())
        except (OSError, ValueError):
            kept = ", ".join(str(n) for n in self.numbers()) or "none"
            raise DeployError(f"generation {number} is not kept on this node (kept: {kept})") from None
        prefix = str(self.layout.current)
        files: dict[str, list[RenderedFile]] = {}
        for component, hashes in manifest["hashes"].items():
            files[component] = []
            for path in hashes:
                real = gen_dir / component / path
                st = real.stat()
                group = grp.getgrgid(st.st_gid).gr_name if st.st_gid != 0 else None
                files[component].append(RenderedFile(path, real.read_text().replace(prefix, GENERATION_TOKEN),
                                                     mode=st.st_mode & 0o7777, group=group))
        return Plan(manifest["template"], manifest["version"], manifest.get("parameters", {}), files,
                    manifest["hashes"], self.changed_components(manifest["hashes"]), self.live_number())

    # ------------------------------------------------------------ writing
    @staticmethod
    def materialise(plan: Plan, target: Path, prefix: str) -> None:
        """Write the plan's files under `target`, the token replaced by `prefix`."""
        shutil.rmtree(target, ignore_errors=True)
        for component, files in plan.files.items():
            for f in files:
                path = target / component / f.path
                path.parent.mkdir(parents=True, exist_ok=True)
                os.chmod(path.parent, 0o755)
                fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, f.mode)
                with os.fdopen(fd, "w") as fh:
                    fh.write(f.content.replace(GENERATION_TOKEN, prefix))
                if f.group:
                    os.chown(path, 0, grp.getgrnam(f.group).gr_gid)
                os.chmod(path, f.mode)
        os.chmod(target, 0o755)

    @contextlib.contextmanager
    def scratch(self, plan: Plan) -> Iterator[Path]:
        """The plan's files in a scratch directory they refer to, removed afterwards."""
        check_dir = self.layout.generations / f".check-{os.getpid()}"
        self.layout.generations.mkdir(parents=True, exist_ok=True)
        self.materialise(plan, check_dir, str(check_dir))
        try:
            yield check_dir
        finally:
            shutil.rmtree(check_dir, ignore_errors=True)

    def write(self, plan: Plan) -> tuple[int, Path]:
        """A new generation directory with the plan's files and its manifest (not live yet)."""
        numbers = self.numbers()
        number = (numbers[-1] if numbers else 0) + 1
        gen_dir = self.path(number)
        tmp_dir = self.layout.generations / f".{number:06d}.tmp"
        self.materialise(plan, tmp_dir, str(self.layout.current))
        manifest = {"number": number, "template": plan.template, "version": plan.version,
                    "parameters": plan.parameters, "hashes": plan.hashes}
        (tmp_dir / MANIFEST).write_text(json.dumps(manifest, indent=2, sort_keys=True))
        os.rename(tmp_dir, gen_dir)
        return number, gen_dir

    def discard(self, gen_dir: Path) -> None:
        shutil.rmtree(gen_dir, ignore_errors=True)

    def switch(self, gen_dir: Path) -> None:
        link_tmp = self.layout.state / ".current.tmp"
        link_tmp.unlink(missing_ok=True)
        os.symlink(os.path.relpath(gen_dir, self.layout.state), link_tmp)
        os.replace(link_tmp, self.layout.current)  # atomic: readers see old or new, never neither

    def unlink_current(self) -> None:
        self.layout.current.unlink(missing_ok=True)

    def prune(self, keep: int) -> None:
        live = self.live_dir()
        for number in self.numbers()[:-keep] if keep > 0 else []:
            if live is None or self.path(number).name != live.name:
                shutil.rmtree(self.path(number), ignore_errors=True)
