"""The container images tests/deploy runs: their base images, and the project's two images.

The Dockerfiles start from the standard ``python:3.11-slim`` and ``node:20-slim``. When those are
not in the container tool's store, equivalents are made from Debian packages, without a container
registry, and imported under the same names (with a registry at hand, ``podman pull`` the real
ones first and they are used instead): a bookworm ``minbase`` root file system (debootstrap)
with python3 (3.11 in bookworm) and pip, or with this machine's Node.js (the nodesource package's
files, npm included) and a ``node`` user of uid 1000 as in the real image. The machine's CA
certificates and its pip and npm settings are copied in, so package installs inside a build reach
the package indexes the way the host does. A base image that exists is never made again; the
project's images are built by ``make image image-node`` with the tool's layer cache.

    python -m tests.deploy.images           # the base images when missing, then both images
    python -m tests.deploy.images --base    # only the base images

Podman reads ``tests/deploy/containers.conf`` (via ``CONTAINERS_CONF``) unless that variable is
already set. ``CONTAINER_TOOL`` chooses the tool (default: podman if installed, else docker);
``DEBIAN_MIRROR`` the Debian mirror for debootstrap.
"""

from __future__ import annotations

import argparse
import configparser
import contextlib
import dataclasses
import os
import pathlib
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence

ROOT = pathlib.Path(__file__).resolve().parent.parent.parent
CONTAINERS_CONF = pathlib.Path(__file__).resolve().parent / "containers.conf"

PROXY_IMAGE = "spiff-connector-proxy:latest"
NODE_IMAGE = "spiff-connector-node:latest"
PYTHON_BASE = "python:3.11-slim"
NODE_BASE = "node:20-slim"

SUITE = "bookworm"  # Debian 12: python3 is 3.11, as in python:3.11-slim (itself bookworm-based)
DEFAULT_MIRROR = "http://deb.debian.org/debian"
PYTHON_PACKAGES = ("python3", "python3-venv", "python3-pip", "python-is-python3", "ca-certificates")
NODE_PACKAGES = ("ca-certificates",)
HOST_CA_BUNDLE = pathlib.Path("/etc/ssl/certs/ca-certificates.crt")
HOST_LOCAL_CAS = pathlib.Path("/usr/local/share/ca-certificates")
# pip settings worth carrying from the host's environment into the base image's /etc/pip.conf:
# the ones that decide how the package index is reached.
PIP_ENV_SETTINGS = {
    "PIP_INDEX_URL": "index-url",
    "PIP_EXTRA_INDEX_URL": "extra-index-url",
    "PIP_TRUSTED_HOST": "trusted-host",
    "PIP_CERT": "cert",
    "PIP_CLIENT_CERT": "client-cert",
    "PIP_PROXY": "proxy",
    "PIP_DEFAULT_TIMEOUT": "timeout",
    "PIP_TIMEOUT": "timeout",
    "PIP_RETRIES": "retries",
}
# Installed Node.js files that the slim image has no use for.
NODE_SKIPPED = ("/usr/share/doc/", "/usr/share/man/")

BUILD_TIMEOUT = 1800  # seconds for one `make image...` (a cold build installs every dependency)


class ImagesError(RuntimeError):
    """An image could not be prepared; the message says what failed, with the command's output."""


@dataclasses.dataclass(frozen=True)
class ContainerTool:
    """A working container tool: ``podman``, or ``docker`` with a running engine."""

    executable: str
    name: str  # "podman" or "docker"

    @property
    def env(self) -> dict[str, str]:
        env = dict(os.environ)
        if self.name == "podman":
            env.setdefault("CONTAINERS_CONF", str(CONTAINERS_CONF))
        return env

    def run(
        self, *args: str, check: bool = True, timeout: float | None = 120
    ) -> subprocess.CompletedProcess[str]:
        """Runs the tool with ``args``; with ``check``, a non-zero exit raises ImagesError."""
        command = [self.executable, *args]
        completed = subprocess.run(
            command,
            env=self.env,
            capture_output=True,
            text=True,
            errors="replace",
            timeout=timeout,
            check=False,
        )
        if check and completed.returncode != 0:
            raise ImagesError(_failure(command, completed))
        return completed

    def image_exists(self, image: str) -> bool:
        if self.name == "podman":
            return self.run("image", "exists", image, check=False).returncode == 0
        return self.run("image", "inspect", image, check=False).returncode == 0


def _failure(command: Sequence[str], completed: subprocess.CompletedProcess[str]) -> str:
    return (
        f"{' '.join(command)} exited with {completed.returncode}:\n"
        f"{completed.stdout[-6000:]}\n{completed.stderr[-6000:]}"
    )


def find_tool() -> ContainerTool | None:
    """``$CONTAINER_TOOL``, else podman if it answers ``info``, else docker if its engine does."""
    wanted = os.environ.get("CONTAINER_TOOL")
    candidates = [wanted] if wanted else ["podman", "docker"]
    for candidate in candidates:
        executable = shutil.which(candidate)
        if executable is None:
            continue
        name = "podman" if pathlib.Path(executable).name.startswith("podman") else "docker"
        tool = ContainerTool(executable, name)
        try:
            if tool.run("info", check=False, timeout=30).returncode == 0:
                return tool
        except subprocess.TimeoutExpired:
            continue
    return None


def tool_missing_reason() -> str:
    """Why ``find_tool`` found nothing, for a skip or failure message."""
    wanted = os.environ.get("CONTAINER_TOOL")
    if wanted:
        return f"CONTAINER_TOOL={wanted} is not installed, or its `{wanted} info` fails"
    if shutil.which("podman") or shutil.which("docker"):
        return "neither `podman info` nor `docker info` succeeds (no usable container engine)"
    return "neither podman nor docker is installed (e.g. apt-get install podman runc)"


def log(message: str) -> None:
    sys.stderr.write(f"[images] {message}\n")
    sys.stderr.flush()


# --- base images -----------------------------------------------------------------------------


@contextlib.contextmanager
def _rootfs(packages: Sequence[str]) -> Iterator[pathlib.Path]:
    """A fresh Debian ``minbase`` root file system with ``packages``, deleted afterwards."""
    debootstrap = shutil.which("debootstrap")
    if debootstrap is None:
        msg = "debootstrap is not installed (apt-get install debootstrap), and the base image is missing"
        raise ImagesError(msg)
    if os.geteuid() != 0:
        msg = "making a base image with debootstrap needs root"
        raise ImagesError(msg)
    mirror = os.environ.get("DEBIAN_MIRROR", DEFAULT_MIRROR)
    # Not /tmp: it may be mounted noexec or nodev, which debootstrap cannot work in.
    with tempfile.TemporaryDirectory(prefix="deploy-rootfs-", dir="/var/tmp") as tmp:
        target = pathlib.Path(tmp) / "rootfs"
        command = [
            debootstrap,
            "--variant=minbase",
            f"--include={','.join(packages)}",
            SUITE,
            str(target),
            mirror,
        ]
        log(f"debootstrap {SUITE} with {', '.join(packages)} (a few minutes)")
        completed = subprocess.run(command, capture_output=True, text=True, timeout=1800, check=False)
        if completed.returncode != 0:
            raise ImagesError(_failure(command, completed))
        # As the Debian-based official images do: no package caches or lists in the image.
        for leftover in ("var/cache/apt/archives", "var/lib/apt/lists"):
            for path in (target / leftover).glob("*"):
                if path.is_file():
                    path.unlink()
        _copy_host_trust(target)
        yield target


def _copy_host_trust(target: pathlib.Path) -> None:
    """The host's CA certificates, so clients inside a build trust the authorities the host does."""
    if HOST_CA_BUNDLE.is_file():
        bundle = target / HOST_CA_BUNDLE.relative_to("/")
        bundle.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(HOST_CA_BUNDLE, bundle)
    if HOST_LOCAL_CAS.is_dir():
        shutil.copytree(HOST_LOCAL_CAS, target / HOST_LOCAL_CAS.relative_to("/"), dirs_exist_ok=True)


def _pip_conf() -> str:
    """/etc/pip.conf for the base image: the host's, plus its PIP_* index and trust settings."""
    config = configparser.ConfigParser(interpolation=None)
    host = pathlib.Path("/etc/pip.conf")
    if host.is_file():
        config.read(host)
    if not config.has_section("global"):
        config.add_section("global")
    for variable, key in PIP_ENV_SETTINGS.items():
        value = os.environ.get(variable)
        if value:
            config.set("global", key, value)
    lines: list[str] = []
    for section in config.sections():
        lines.append(f"[{section}]")
        lines.extend(f"{key} = {value}" for key, value in config.items(section, raw=True))
    return "\n".join(lines) + "\n"


def _import(tool: ContainerTool, rootfs: pathlib.Path, image: str, changes: Sequence[str]) -> None:
    """``tar -C rootfs -c . | <tool> import --change ... - image``."""
    command = [tool.executable, "import"]
    for change in changes:
        command += ["--change", change]
    if tool.name == "podman":
        command += ["--message", f"Debian {SUITE} minbase (debootstrap), a local stand-in for {image}"]
    command += ["-", image]
    tar = subprocess.Popen(["tar", "--numeric-owner", "-C", str(rootfs), "-c", "."], stdout=subprocess.PIPE)
    assert tar.stdout is not None
    with tar:
        completed = subprocess.run(
            command, stdin=tar.stdout, env=tool.env, capture_output=True, text=True, timeout=600, check=False
        )
        tar.stdout.close()
    if tar.returncode != 0 or completed.returncode != 0:
        raise ImagesError(_failure(command, completed) + f"\n(tar exited with {tar.returncode})")


def make_python_base(tool: ContainerTool) -> None:
    with _rootfs(PYTHON_PACKAGES) as rootfs:
        (rootfs / "etc" / "pip.conf").write_text(_pip_conf())
        _import(
            tool,
            rootfs,
            PYTHON_BASE,
            [
                "ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
                "ENV LANG=C.UTF-8",
                'CMD ["python3"]',
            ],
        )


def _node_files() -> list[pathlib.Path]:
    """The files of the host's ``nodejs`` package (node, npm, npx, corepack, headers)."""
    completed = subprocess.run(["dpkg", "-L", "nodejs"], capture_output=True, text=True, check=False)
    if completed.returncode != 0:
        msg = f"the host has no nodejs package to copy into {NODE_BASE}: {completed.stderr.strip()}"
        raise ImagesError(msg)
    files: list[pathlib.Path] = []
    for line in completed.stdout.splitlines():
        path = pathlib.Path(line.strip())
        if not line.strip() or line.startswith(NODE_SKIPPED):
            continue
        if path.is_symlink() or path.is_file():
            files.append(path)
    return files


def _node_version() -> str:
    node = shutil.which("node")
    if node is None:
        msg = f"node is not installed on this machine, and {NODE_BASE} is missing"
        raise ImagesError(msg)
    return subprocess.run([node, "--version"], capture_output=True, text=True, check=True).stdout.strip()


def make_node_base(tool: ContainerTool) -> None:
    version = _node_version().removeprefix("v")
    files = _node_files()
    with _rootfs(NODE_PACKAGES) as rootfs:
        for path in files:
            destination = rootfs / path.relative_to("/")
            destination.parent.mkdir(parents=True, exist_ok=True)
            if destination.is_symlink() or destination.exists():
                destination.unlink()
            if path.is_symlink():
                destination.symlink_to(os.readlink(path))
            else:
                shutil.copy2(path, destination)
        # npm as installed now (it may have been upgraded since the package was), with its links.
        npm = pathlib.Path("/usr/lib/node_modules/npm")
        if npm.is_dir():
            shutil.copytree(npm, rootfs / "usr/lib/node_modules/npm", symlinks=True, dirs_exist_ok=True)
        for name in ("npm", "npx", "corepack"):
            link = pathlib.Path("/usr/bin") / name
            destination = rootfs / "usr/bin" / name
            if link.is_symlink() and not (destination.exists() or destination.is_symlink()):
                destination.symlink_to(os.readlink(link))
        # npm's global settings (the prefix is /usr): the host's, and the CA bundle copied in.
        npmrc = rootfs / "usr/etc/npmrc"
        npmrc.parent.mkdir(parents=True, exist_ok=True)
        host_npmrc = pathlib.Path("/usr/etc/npmrc")
        settings = host_npmrc.read_text() if host_npmrc.is_file() else ""
        if "cafile" not in settings and HOST_CA_BUNDLE.is_file():
            settings += f"cafile={HOST_CA_BUNDLE}\n"
        npmrc.write_text(settings)
        # The user of the official image: node, uid and gid 1000, home /home/node.
        for command in (
            ["groupadd", "--gid", "1000", "node"],
            ["useradd", "--uid", "1000", "--gid", "node", "--shell", "/bin/bash", "--create-home", "node"],
        ):
            subprocess.run(["chroot", str(rootfs), *command], capture_output=True, check=True)
        _import(
            tool,
            rootfs,
            NODE_BASE,
            [
                "ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
                f"ENV NODE_VERSION={version}",
                'CMD ["node"]',
            ],
        )


def ensure_base_images(tool: ContainerTool) -> None:
    """Makes ``python:3.11-slim`` and ``node:20-slim`` when the tool's store lacks them."""
    for image, make in ((PYTHON_BASE, make_python_base), (NODE_BASE, make_node_base)):
        if tool.image_exists(image):
            continue
        started = time.monotonic()
        make(tool)
        log(f"made {image} in {time.monotonic() - started:.0f} s")


# --- the project's images --------------------------------------------------------------------


def build_images(tool: ContainerTool, targets: Sequence[str] = ("image", "image-node")) -> float:
    """``make image image-node`` with this tool; returns the seconds it took."""
    make = shutil.which("make")
    if make is None:
        msg = "make is not installed"
        raise ImagesError(msg)
    # IMAGE_BUILD_FLAGS, when set in the environment, reaches the build through make.
    command = [make, "--no-print-directory", *targets, f"CONTAINER_TOOL={tool.executable}"]
    started = time.monotonic()
    completed = subprocess.run(
        command,
        cwd=ROOT,
        env=tool.env,
        capture_output=True,
        text=True,
        timeout=BUILD_TIMEOUT,
        check=False,
    )
    if completed.returncode != 0:
        raise ImagesError(_failure(command, completed))
    return time.monotonic() - started


def image_size(tool: ContainerTool, image: str) -> int:
    """The image's size in bytes, as ``image inspect`` reports it (uncompressed layers)."""
    return int(tool.run("image", "inspect", "--format", "{{.Size}}", image).stdout.strip())


def prepare(tool: ContainerTool, *, base_only: bool = False) -> None:
    ensure_base_images(tool)
    if base_only:
        return
    seconds = build_images(tool)
    log(f"built {PROXY_IMAGE} and {NODE_IMAGE} in {seconds:.0f} s")
    for image in (PROXY_IMAGE, NODE_IMAGE, PYTHON_BASE, NODE_BASE):
        log(f"{image}: {image_size(tool, image) / 1e6:.0f} MB")


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m tests.deploy.images", description=__doc__.split("\n\n")[0]
    )
    parser.add_argument("--base", action="store_true", help="only make the missing base images")
    args = parser.parse_args(argv)
    tool = find_tool()
    if tool is None:
        log(tool_missing_reason())
        return 1
    try:
        prepare(tool, base_only=args.base)
    except ImagesError as exc:
        log(str(exc))
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
