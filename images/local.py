"""Build every image on this machine, offline from registries (`make images-local`, `make test`).

What `make images` does, with what a machine without registry access lacks put in place:

- a container engine: if none answers, Debian's `docker.io` is installed (root only) and
  `dockerd` is started in the background, and stopped again (by its pid) when done;
- the two registry bases, as local stand-ins passed to images/build.py as build arguments
  (never tagged with the real names, which a later `make images` would then build on): a
  Debian root filesystem made with debootstrap (with python3.11, so the base uses that
  interpreter instead of downloading one) for the CUDA image, and the `uv` binary of the PyPI
  wheel of the pinned version in a from-scratch image for the uv image;
- the machine's own package indexes (pip's configuration: local `file://` indexes and
  find-links are served read-only on 127.0.0.1 for the build, which runs on the host network)
  and its CA bundle (a build secret, used from its own path).

Images are tagged `localhost/lanepaint/lanepaint-<image>:local` and never pushed.

    python images/local.py build                 # engine, stand-ins, images/build.py
    python images/local.py run -- CMD ...        # the same, then CMD with the engine still up
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import http.server
import io
import os
import re
import shlex
import shutil
import subprocess
import sys
import tarfile
import tempfile
import threading
import time
import zipfile
from collections.abc import Iterator
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
CACHE = REPO / ".cache" / "images"
REGISTRY = "localhost/lanepaint"
TAG = "local"
STANDIN = "localhost/lanepaint-standin"
DEBIAN_SUITE = "bookworm"  # python3.11 is its system Python
DEBIAN_MIRROR = os.environ.get("LANEPAINT_DEBIAN_MIRROR", "http://deb.debian.org/debian")
SYSTEM_PYTHON = "/usr/bin/python3.11"
VENDOR_LABEL = "org.opencontainers.image.vendor=lanepaint"  # on every image we build
BUILD_CACHE_KEEP = os.environ.get("LANEPAINT_BUILD_CACHE_KEEP", "20GB")
INDEX_PORT = int(os.environ.get("LANEPAINT_INDEX_PORT", "8731"))  # fixed: part of the cache key


def log(message: str) -> None:
    print(f"[images-local] {message}", flush=True)


def as_root() -> bool:
    return os.geteuid() == 0


def apt_install(*packages: str) -> None:
    """Debian packages this needs; only as root (as `make browser` does for chromium)."""
    if not as_root():
        raise SystemExit(f"error: {' '.join(packages)} missing; install it (needs root)")
    log(f"apt-get install {' '.join(packages)}")
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    subprocess.run(["apt-get", "update", "-q"], check=True, env=env, stdout=subprocess.DEVNULL)
    subprocess.run(
        ["apt-get", "install", "-y", "-q", *packages],
        check=True,
        env=env,
        stdout=subprocess.DEVNULL,
    )


def docker_client() -> str:
    """A docker CLI that can build with BuildKit: one with the buildx plugin, else Debian's
    own client (docker.io, which has BuildKit built in), else whatever `docker` is."""
    with contextlib.suppress(OSError):  # no `docker` on PATH at all
        if subprocess.run(["docker", "buildx", "version"], capture_output=True).returncode == 0:
            return "docker"
    debian = Path("/usr/bin/docker")
    return str(debian) if debian.is_file() else "docker"


def engine_answers(docker: str) -> bool:
    try:
        return subprocess.run([docker, "info"], capture_output=True, timeout=20).returncode == 0
    except (OSError, subprocess.TimeoutExpired):
        return False


@contextlib.contextmanager
def engine() -> Iterator[str]:
    """The docker CLI to use, with an engine answering it; an engine this started is stopped
    at the end (by its pid), one that was already running is left alone."""
    if shutil.which("dockerd") is None and not engine_answers(docker_client()):
        apt_install("docker.io")
    docker = docker_client()
    if engine_answers(docker):
        yield docker
        return
    CACHE.mkdir(parents=True, exist_ok=True)
    logfile = CACHE / "dockerd.log"
    log(f"starting dockerd (log: {logfile})")
    with logfile.open("ab") as out:
        daemon = subprocess.Popen(
            ["dockerd"], stdout=out, stderr=out, stdin=subprocess.DEVNULL, start_new_session=True
        )
    try:
        deadline = time.monotonic() + 90
        while not engine_answers(docker):
            if daemon.poll() is not None or time.monotonic() > deadline:
                raise SystemExit(f"error: dockerd did not start; see {logfile}")
            time.sleep(1)
        yield docker
    finally:
        stop(daemon)


def stop(daemon: subprocess.Popen) -> None:
    log(f"stopping dockerd (pid {daemon.pid})")
    daemon.terminate()
    try:
        daemon.wait(timeout=60)
    except subprocess.TimeoutExpired:
        daemon.kill()
        daemon.wait()


def dockerfile_default(name: str) -> str:
    """An ARG's default in images/base/Dockerfile (the real base images and their pins)."""
    text = (REPO / "images" / "base" / "Dockerfile").read_text()
    match = re.search(rf"^ARG {name}=(\S+)$", text, re.MULTILINE)
    if not match:
        raise SystemExit(f"error: images/base/Dockerfile declares no ARG {name}=...")
    return match[1]


def standin_ref(real: str) -> str:
    """localhost/lanepaint-standin/<name>:<the real tag>, e.g. .../cuda:13.0.2-runtime-..."""
    name, _, tag = real.rpartition("/")[2].partition(":")
    return f"{STANDIN}/{name}:{tag.split('@')[0]}"


def have_image(docker: str, ref: str) -> bool:
    return subprocess.run([docker, "image", "inspect", ref], capture_output=True).returncode == 0


def docker_import(docker: str, ref: str, tar: Path | bytes, *changes: str) -> None:
    args = [a for c in changes for a in ("--change", c)]
    if isinstance(tar, Path):
        subprocess.run([docker, "import", *args, str(tar), ref], check=True)
    else:
        subprocess.run([docker, "import", *args, "-", ref], input=tar, check=True)


def cuda_standin(docker: str) -> str:
    """A Debian root filesystem (debootstrap, with python3.11 and ca-certificates) in the
    CUDA image's place; built once per machine."""
    ref = standin_ref(dockerfile_default("CUDA_IMAGE"))
    if have_image(docker, ref):
        return ref
    if shutil.which("debootstrap") is None:
        apt_install("debootstrap")
    CACHE.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=CACHE) as tmp:
        root, tar = Path(tmp) / "rootfs", Path(tmp) / "rootfs.tar"
        log(f"debootstrap {DEBIAN_SUITE} for {ref}")
        subprocess.run(
            ["debootstrap", "--variant=minbase", "--include=python3.11,ca-certificates"]
            + [DEBIAN_SUITE, str(root), DEBIAN_MIRROR],
            check=True,
            stdout=subprocess.DEVNULL,
        )
        subprocess.run(["tar", "-C", str(root), "-cf", str(tar), "."], check=True)
        path = "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
        docker_import(docker, ref, tar, f"ENV {path}", 'CMD ["/bin/bash"]')
    return ref


def uv_standin(docker: str) -> str:
    """The pinned uv release's binaries (from its PyPI wheel) at /uv and /uvx, as in the
    real uv image."""
    real = dockerfile_default("UV_IMAGE")
    ref, version = standin_ref(real), real.rpartition(":")[2]
    if have_image(docker, ref):
        return ref
    with tempfile.TemporaryDirectory() as tmp:
        log(f"uv=={version} from PyPI for {ref}")
        subprocess.run(
            [sys.executable, "-m", "pip", "download", "-q", "--no-deps", "--only-binary=:all:"]
            + ["--platform", "manylinux2014_x86_64", "-d", tmp, f"uv=={version}"],
            check=True,
        )
        (wheel,) = Path(tmp).glob("uv-*.whl")
        buf = io.BytesIO()
        with zipfile.ZipFile(wheel) as whl, tarfile.open(fileobj=buf, mode="w") as out:
            for name in ("uv", "uvx"):
                data = whl.read(f"uv-{version}.data/scripts/{name}")
                info = tarfile.TarInfo(name)
                info.size, info.mode = len(data), 0o755
                out.addfile(info, io.BytesIO(data))
        docker_import(docker, ref, buf.getvalue(), 'CMD ["/uv"]')
    return ref


def pip_locations() -> dict[str, list[str]]:
    """index-url, extra-index-url, find-links and cert from pip's configuration (files and
    PIP_* variables), as `pip config list` reports them."""
    out = subprocess.run(
        [sys.executable, "-m", "pip", "config", "list"], capture_output=True, text=True
    ).stdout
    found: dict[str, list[str]] = {}
    for line in out.splitlines():
        key, _, value = line.partition("=")
        option = key.rpartition(".")[2]
        if option in ("index-url", "extra-index-url", "find-links", "cert"):
            for item in value.strip("'\"").split():
                if item not in found.setdefault(option, []):
                    found[option].append(item)
    return found


class _Quiet(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args) -> None:  # the build's own output says what was fetched
        pass


@contextlib.contextmanager
def served_indexes() -> Iterator[list[str]]:
    """Build arguments that give the build pip's indexes: local ones (file:// or a folder)
    served read-only on 127.0.0.1:INDEX_PORT (the build uses the host network), remote ones
    as they are. uv then picks the best match over all of them, as pip does."""
    found = pip_locations()
    with tempfile.TemporaryDirectory() as tmp:
        urls: dict[str, list[str]] = {"index-url": [], "extra-index-url": [], "find-links": []}
        for option in urls:
            for n, location in enumerate(found.get(option, [])):
                path = location.removeprefix("file://")
                if re.match(r"^https?://", location) or not Path(path).is_dir():
                    urls[option].append(location)
                    continue
                if option == "find-links":  # the folder itself, as a listing
                    (Path(tmp) / f"f{n}").symlink_to(path)
                    urls[option].append(f"http://127.0.0.1:{INDEX_PORT}/f{n}/")
                else:  # the index's parent, so relative links (../../files/) resolve
                    (Path(tmp) / f"i{option[0]}{n}").symlink_to(Path(path).parent)
                    urls[option].append(
                        f"http://127.0.0.1:{INDEX_PORT}/i{option[0]}{n}/{Path(path).name}"
                    )
        handler = functools.partial(_Quiet, directory=tmp)
        server = http.server.ThreadingHTTPServer(("127.0.0.1", INDEX_PORT), handler)
        thread = threading.Thread(target=server.serve_forever, daemon=True)
        thread.start()
        try:
            yield uv_build_args(urls)
        finally:
            server.shutdown()
            server.server_close()


def uv_build_args(urls: dict[str, list[str]]) -> list[str]:
    args = []
    if urls["index-url"]:
        args.append(f"UV_DEFAULT_INDEX={urls['index-url'][0]}")
    if urls["extra-index-url"]:
        args.append(f"UV_EXTRA_INDEX_URL={' '.join(urls['extra-index-url'])}")
    if urls["find-links"]:
        args.append(f"UV_FIND_LINKS={','.join(urls['find-links'])}")
    if any(urls.values()):
        args.append("UV_INDEX_STRATEGY=unsafe-best-match")
    return args


def ca_bundle() -> str | None:
    """The CA bundle this machine's pip uses (SSL_CERT_FILE, pip's cert, or Debian's)."""
    for candidate in (
        os.environ.get("SSL_CERT_FILE"),
        *pip_locations().get("cert", []),
        "/etc/ssl/certs/ca-certificates.crt",
    ):
        if candidate and Path(candidate).is_file():
            return candidate
    return None


def build(docker: str) -> int:
    """images/build.py --no-push with the stand-in bases, the system Python, the machine's
    indexes and CA bundle; the host network only for the build (indexes on 127.0.0.1)."""
    bases = [f"CUDA_IMAGE={cuda_standin(docker)}", f"UV_IMAGE={uv_standin(docker)}"]
    with served_indexes() as index_args:
        command = [sys.executable, str(REPO / "images" / "build.py")]
        command += ["--registry", REGISTRY, "--tag", TAG, "--no-push", "--allow-dirty"]
        command += ["--docker", docker, "--network", "host"]
        for arg in [*bases, f"PYTHON={SYSTEM_PYTHON}", *index_args]:
            command += ["--build-arg", arg]
        cert = ca_bundle()
        if cert:
            command += ["--secret", f"id=ca-bundle,src={cert}"]
        log(shlex.join(command))
        code = subprocess.run(command, cwd=REPO).returncode
    # The images a rebuild replaced (untagged now, ours by their vendor label) hold the old
    # torch layer: gigabytes per rebuild otherwise.
    subprocess.run(
        [docker, "image", "prune", "--force", "--filter", f"label={VENDOR_LABEL}"],
        stdout=subprocess.DEVNULL,
    )
    # BuildKit's cache grows with every changed layer; bound it so repeated CI runs on one
    # machine cannot fill its disk, while keeping enough for the base's torch layers.
    subprocess.run(
        [docker, "builder", "prune", "--force", "--keep-storage", BUILD_CACHE_KEEP],
        stdout=subprocess.DEVNULL,
    )
    return code


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("build", help="build every image (no push)")
    run = sub.add_parser("run", help="build, then run a command with the engine up")
    run.add_argument("argv", nargs=argparse.REMAINDER, help="-- COMMAND [ARGS...]")
    args = parser.parse_args(argv)
    command = getattr(args, "argv", [])
    command = command[1:] if command[:1] == ["--"] else command
    if args.command == "run" and not command:
        parser.error("run needs a command: run -- COMMAND [ARGS...]")
    if not as_root() and not engine_answers(docker_client()):
        message = "no container engine answers and only root may start one"
        if args.command == "build" or os.environ.get("CI") == "true":
            print(f"error: {message}", file=sys.stderr)
            return 2
        log(f"warning: {message}; the container tests will be skipped")
        return subprocess.run(command).returncode
    with engine() as docker:
        started = time.monotonic()
        code = build(docker)
        log(f"images built in {time.monotonic() - started:.0f} s (exit {code})")
        if code or args.command == "build":
            return code
        env = {**os.environ, "DOCKER": docker, "LANEPAINT_REQUIRE_CONTAINERS": "1"}
        return subprocess.run(command, env=env).returncode


if __name__ == "__main__":
    sys.exit(main())
