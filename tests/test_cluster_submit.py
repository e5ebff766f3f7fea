"""pipelines.submit against a local KFP v2beta1 API: every request body is checked against
the kfp_server_api models (unknown fields refused), uploads and embedded specs are parsed
strictly, and the run's final state becomes the exit status."""

import json
import re
import threading
import uuid
from datetime import UTC, datetime
from email.parser import BytesParser
from email.policy import HTTP
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from types import SimpleNamespace
from urllib.parse import parse_qs, urlsplit

import kfp_server_api
import pytest
import yaml
from google.protobuf import json_format
from kfp import compiler, dsl
from kfp.client import client as kfp_client_module
from kfp.pipeline_spec import pipeline_spec_pb2

from components import settings as cfg
from pipelines import submit

TAG = "0123456789ab"
PRIMITIVES = {"str", "int", "bool", "float", "datetime", "date", "object"}


def unknown_fields(data, klass: str, path: str = "") -> list[str]:
    """JSON keys that model ``klass`` does not define (recursively), and bad enum values."""
    if data is None or klass in PRIMITIVES:
        return []
    if m := re.fullmatch(r"list\[(.+)\]", klass):
        return [
            e for i, item in enumerate(data) for e in unknown_fields(item, m[1], f"{path}[{i}]")
        ]
    if m := re.fullmatch(r"dict\(str, (.+)\)", klass):
        return [e for k, v in data.items() for e in unknown_fields(v, m[1], f"{path}.{k}")]
    model = getattr(kfp_server_api.models, klass)
    if not model.openapi_types:  # an enum
        allowed = [v for k, v in vars(model).items() if k.isupper()]
        return [] if data in allowed else [f"{path}: {data!r} not in {klass}"]
    by_json = {model.attribute_map[a]: t for a, t in model.openapi_types.items()}
    errors = []
    for key, value in data.items():
        if key not in by_json:
            errors.append(f"{path}.{key}: not a field of {klass}")
        else:
            errors += unknown_fields(value, by_json[key], f"{path}.{key}")
    return errors


def parse_spec_strictly(spec: dict) -> tuple[dict, dict]:
    """The pipeline spec a run carries (with its platform spec) parsed into the protos."""
    pipeline, platform = spec.get("pipeline_spec", spec), spec.get("platform_spec", {})
    json_format.ParseDict(pipeline, pipeline_spec_pb2.PipelineSpec())
    json_format.ParseDict(platform, pipeline_spec_pb2.PlatformSpec())
    return pipeline, platform


def images_of(pipeline: dict) -> set[str]:
    return {e["container"]["image"] for e in pipeline["deploymentSpec"]["executors"].values()}


class FakeKFP:
    """The KFP v2beta1 REST calls kfp.Client makes, with state kept in memory."""

    def __init__(self):
        self.api = kfp_server_api.ApiClient()
        self.calls: list[tuple[str, str]] = []
        self.errors: list[str] = []
        self.auth: set[str] = set()
        self.experiments: dict[str, dict] = {}
        self.runs: dict[str, dict] = {}
        self.run_states: list[str] = ["PENDING", "RUNNING", "SUCCEEDED"]
        self.pipelines: dict[str, dict] = {}
        self.versions: dict[str, list[dict]] = {}
        self.uploads: list[dict] = []
        self.recurring: dict[str, dict] = {}
        self.inject: list[tuple[str, str, int]] = []  # (method, path regex, status) to fail once
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, args=(0.05,), daemon=True)

    def paths(self, method: str) -> list[str]:
        return [p for m, p in self.calls if m == method]

    # --- validation helpers
    def model(self, data: dict, klass: str):
        errors = unknown_fields(data, klass)
        if errors:
            raise ValueError("; ".join(errors))
        return self.api.deserialize(SimpleNamespace(data=json.dumps(data)), klass)

    @staticmethod
    def now() -> str:
        return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")

    @staticmethod
    def matching(items, query: dict) -> list[dict]:
        """Apply a display_name EQUALS filter as the API server does."""
        if "filter" not in query:
            return list(items)
        (pred,) = json.loads(query["filter"][0])["predicates"]
        assert pred["key"] == "display_name" and pred["operation"] in (1, "EQUALS")
        return [i for i in items if i["display_name"] == pred["stringValue"]]

    def multipart(self, headers, body: bytes, query: dict, allowed: set[str]) -> bytes:
        """The uploaded file; query parameters must be ones the upload API takes."""
        assert set(query) <= allowed, f"unexpected upload parameters {set(query) - allowed}"
        head = f"Content-Type: {headers['Content-Type']}\r\n\r\n".encode()
        msg = BytesParser(policy=HTTP).parsebytes(head + body)
        (part,) = list(msg.iter_parts())
        assert part.get_param("name", header="content-disposition") == "uploadfile"
        return part.get_payload(decode=True)

    # --- routes
    def route(self, method: str, path: str, query: dict, headers, body: bytes):
        base = "/apis/v2beta1"
        if method == "GET" and path == f"{base}/healthz":
            return {"multi_user": False, "pipeline_store": "database"}, "V2beta1GetHealthzResponse"
        if method == "GET" and path == f"{base}/experiments":
            found = self.matching(self.experiments.values(), query)
            return {
                "experiments": found,
                "total_size": len(found),
            }, "V2beta1ListExperimentsResponse"
        if method == "POST" and path == f"{base}/experiments":
            data = json.loads(body)
            self.model(data, "V2beta1Experiment")
            exp = {**data, "experiment_id": str(uuid.uuid4()), "created_at": self.now()}
            self.experiments[exp["experiment_id"]] = exp
            return exp, "V2beta1Experiment"
        if method == "POST" and path == f"{base}/runs":
            data = json.loads(body)
            self.model(data, "V2beta1Run")
            assert data["experiment_id"] in self.experiments
            parse_spec_strictly(data["pipeline_spec"])
            run = {
                **data,
                "run_id": str(uuid.uuid4()),
                "state": "PENDING",
                "created_at": self.now(),
            }
            self.runs[run["run_id"]] = run
            return run, "V2beta1Run"
        if method == "GET" and (m := re.fullmatch(f"{base}/runs/([^/:]+)", path)):
            run = dict(self.runs[m[1]])
            run["state"] = (
                self.run_states.pop(0) if len(self.run_states) > 1 else self.run_states[0]
            )
            if run["state"] == "FAILED":
                run["error"] = {"code": 2, "message": "task train-lora failed"}
            return run, "V2beta1Run"
        if method == "GET" and path == f"{base}/pipelines":
            found = self.matching(self.pipelines.values(), query)
            return {"pipelines": found, "total_size": len(found)}, "V2beta1ListPipelinesResponse"
        if method == "POST" and path == f"{base}/pipelines/upload":
            allowed = {"name", "display_name", "description", "namespace", "tags"}
            content = self.multipart(headers, body, query, allowed)
            pid = str(uuid.uuid4())
            name = query["name"][0]
            p = {"pipeline_id": pid, "display_name": name, "name": name, "created_at": self.now()}
            if "description" in query:
                p["description"] = query["description"][0]
            self.pipelines[pid] = p
            self.versions[pid] = [self._version(pid, name, query, content)]
            return p, "V2beta1Pipeline"
        if method == "POST" and path == f"{base}/pipelines/upload_version":
            allowed = {"name", "display_name", "pipelineid", "description", "tags"}
            content = self.multipart(headers, body, query, allowed)
            pid = query["pipelineid"][0]
            version = self._version(pid, query["name"][0], query, content)
            self.versions[pid].append(version)
            return version, "V2beta1PipelineVersion"
        if method == "GET" and (m := re.fullmatch(f"{base}/pipelines/([^/]+)/versions", path)):
            found = self.matching(self.versions[m[1]], query)
            return {"pipeline_versions": found, "total_size": len(found)}, (
                "V2beta1ListPipelineVersionsResponse"
            )
        if method == "GET" and path == f"{base}/recurringruns":
            wanted = query.get("experiment_id")
            items = [
                r for r in self.recurring.values() if not wanted or r["experiment_id"] in wanted
            ]
            found = self.matching(items, query)
            return {"recurringRuns": found, "total_size": len(found)}, (
                "V2beta1ListRecurringRunsResponse"
            )
        if method == "POST" and path == f"{base}/recurringruns":
            data = json.loads(body)
            self.model(data, "V2beta1RecurringRun")
            parse_spec_strictly(data["pipeline_spec"])
            rid = str(uuid.uuid4())
            rec = {**data, "recurring_run_id": rid, "status": "ENABLED", "created_at": self.now()}
            self.recurring[rid] = rec
            return rec, "V2beta1RecurringRun"
        if method == "POST" and (m := re.fullmatch(f"{base}/recurringruns/(.+):disable", path)):
            self.recurring[m[1]].update(status="DISABLED", mode="DISABLE")
            return {}, None
        raise LookupError(f"no route for {method} {path}")

    def respond(self, method: str, url, headers, body: bytes) -> tuple[int, dict]:
        """Status and JSON for one request; a request the API models reject is a 400 and an
        error the test sees."""
        try:
            payload, klass = self.route(method, url.path, parse_qs(url.query), headers, body)
            if klass and (bad := unknown_fields(payload, klass)):  # a bug in the fake itself
                raise AssertionError(f"response does not fit {klass}: {bad}")
            return 200, payload
        except LookupError as err:
            self.errors.append(str(err))
            return 404, {"error": str(err)}
        except Exception as err:
            self.errors.append(f"{method} {url.path}: {err!r}")
            return 400, {"error": repr(err)}

    def _version(self, pid: str, name: str, query: dict, content: bytes) -> dict:
        docs = list(yaml.safe_load_all(content))
        parse_spec_strictly({"pipeline_spec": docs[0], "platform_spec": (docs[1:] or [{}])[0]})
        version = {
            "pipeline_id": pid,
            "pipeline_version_id": str(uuid.uuid4()),
            "display_name": name,
            "name": name,
            "created_at": self.now(),
        }
        if "description" in query:
            version["description"] = query["description"][0]
        self.uploads.append({"name": name, "docs": docs, "description": version.get("description")})
        return version

    def _handler(self):
        fake = self

        class Handler(BaseHTTPRequestHandler):
            def _serve(self, method: str):
                url = urlsplit(self.path)
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                fake.calls.append((method, url.path))
                if self.headers.get("Authorization"):
                    fake.auth.add(self.headers["Authorization"])
                injected = [
                    f for f in fake.inject if f[0] == method and re.fullmatch(f[1], url.path)
                ]
                if injected:
                    fake.inject.remove(injected[0])
                    status, payload = injected[0][2], {"code": 7, "message": "injected failure"}
                else:
                    status, payload = fake.respond(method, url, self.headers, body)
                data = json.dumps(payload).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def do_GET(self):
                self._serve("GET")

            def do_POST(self):
                self._serve("POST")

            def log_message(self, *args):
                pass

        return Handler


@pytest.fixture
def kfp_api(monkeypatch, tmp_path):
    fake = FakeKFP()
    fake.thread.start()
    monkeypatch.setenv("KF_PIPELINES_ENDPOINT", fake.url)
    monkeypatch.setenv("KF_PIPELINES_TOKEN", "test-token")
    monkeypatch.delenv("LANEPAINT_IMAGE_TAG", raising=False)
    monkeypatch.delenv("LANEPAINT_IMAGE_REGISTRY", raising=False)
    monkeypatch.setattr(kfp_client_module.Client, "_LOCAL_KFP_CONTEXT", str(tmp_path / "ctx.json"))
    yield fake
    fake.server.shutdown()
    fake.server.server_close()


@pytest.fixture(scope="module")
def package(tmp_path_factory) -> Path:
    """filter-dataset compiled the way `make run-pipeline` does: a fresh interpreter with
    LANEPAINT_IMAGE_TAG set."""
    out = tmp_path_factory.mktemp("pkg") / "filter-dataset.yaml"
    return submit.compile_package("filter-dataset", out, TAG)


@dsl.component(base_image=cfg.image_for("merge"), install_kfp_package=False)
def write_under(input_dir: str, output_dir: str) -> str:
    return output_dir


@dsl.pipeline(name="dated-filter")
def dated_filter(input_dir: str, run_date: str, out_root: str = "gs://lanepaint-data/filtered"):
    """Like dataset-build: each scheduled run writes under out_root/<run_date>."""
    task = write_under(input_dir=input_dir, output_dir=f"{out_root}/{run_date}")
    cfg.configure(task, "merge")


@pytest.fixture(scope="module")
def dated_package(tmp_path_factory) -> Path:
    """A pipeline with the date parameter that schedules need."""
    out = tmp_path_factory.mktemp("pkg") / "dated-filter.yaml"
    compiler.Compiler().compile(dated_filter, str(out))
    return out


def test_fresh_compile_uses_the_image_tag_and_passes_the_checks(package):
    docs, text = submit.load_package(package)
    assert images_of(docs[0]) == {cfg.image_ref("cpu", TAG)}
    assert submit.check_compiled(docs, expected_tag=TAG, text=text) == []
    committed = (Path(submit.REPO) / "pipelines/compiled/filter-dataset.yaml").read_text()
    assert text == committed.replace(f":{cfg.settings()['image_tag']}\n", f":{TAG}\n")


def test_run_waits_and_exits_zero_on_success(kfp_api, package, tmp_path):
    params = tmp_path / "params.yaml"
    params.write_text(
        "input_dir: gs://bucket/ds\ncolor: white\nlimit: 5\nrequire_clear_road: true\n"
    )
    argv = ["run", "filter-dataset", "--package", str(package), "--params", str(params)]
    assert submit.main([*argv, "--wait", "--poll", "0.01"]) == 0
    assert kfp_api.errors == []
    assert kfp_api.auth == {"Bearer test-token"}
    (exp,) = kfp_api.experiments.values()
    assert exp["display_name"] == cfg.settings()["cluster"]["experiment"]
    (run,) = kfp_api.runs.values()
    assert run["experiment_id"] == exp["experiment_id"]
    assert run["service_account"] == "lanepaint-pipeline-runner"
    assert run["display_name"].startswith(f"filter-dataset {TAG} ")
    assert run["runtime_config"]["parameters"] == {
        "input_dir": "gs://bucket/ds",
        "color": "white",
        "limit": 5,
        "require_clear_road": True,
    }
    pipeline, _ = parse_spec_strictly(run["pipeline_spec"])
    assert images_of(pipeline) == {cfg.image_ref("cpu", TAG)}
    (task,) = pipeline["root"]["dag"]["tasks"].values()
    assert not task.get("cachingOptions", {}).get("enableCache")  # compile-time policy kept
    assert len(kfp_api.paths("GET")) >= 4  # healthz, experiment lookup, then polls to the end
    assert kfp_api.run_states == ["SUCCEEDED"]


@pytest.mark.parametrize("final", ["FAILED", "CANCELED"])
def test_a_run_that_does_not_succeed_exits_nonzero(kfp_api, package, final, capsys):
    kfp_api.run_states = ["RUNNING", final]
    argv = ["run", "filter-dataset", "--package", str(package), "--param", "input_dir=gs://b/d"]
    assert submit.main([*argv, "--wait", "--poll", "0.01"]) == submit.EXIT_RUN_FAILED
    assert f"ended {final}" in capsys.readouterr().err
    assert kfp_api.errors == []


def test_without_wait_the_run_is_not_polled(kfp_api, package):
    argv = ["run", "filter-dataset", "--package", str(package), "--param", "input_dir=gs://b/d"]
    assert submit.main(argv) == 0
    assert len(kfp_api.runs) == 1
    assert not [p for p in kfp_api.paths("GET") if p.startswith("/apis/v2beta1/runs/")]


def test_waiting_past_the_timeout_exits_124(kfp_api, package):
    kfp_api.run_states = ["RUNNING"]
    argv = ["run", "filter-dataset", "--package", str(package), "--param", "input_dir=gs://b/d"]
    assert submit.main([*argv, "--wait", "--timeout", "0.05", "--poll", "0.01"]) == 124


@pytest.mark.parametrize(
    ("params", "needle"),
    [
        (["--param", "input_dir=gs://b/d", "--param", "colour=white"], "unknown parameters"),
        (["--param", "color=white"], "missing required parameters ['input_dir']"),
        (["--param", "input_dir=gs://b/d", "--param", "limit=many"], "must be NUMBER_INTEGER"),
    ],
)
def test_bad_parameters_fail_before_anything_is_sent(kfp_api, package, params, needle, capsys):
    argv = ["run", "filter-dataset", "--package", str(package), *params]
    assert submit.main(argv) == submit.EXIT_USAGE
    assert needle in capsys.readouterr().err
    assert kfp_api.calls == []


def test_string_parameters_keep_their_text(kfp_api, package, tmp_path):
    params = tmp_path / "p.yaml"
    params.write_text("input_dir: gs://b/d\nsuffix: 2024-05-01\n")  # YAML reads a date
    argv = ["run", "filter-dataset", "--package", str(package), "--params", str(params)]
    assert submit.main([*argv, "--param", "sort_by=007"]) == 0
    (run,) = kfp_api.runs.values()
    assert run["runtime_config"]["parameters"]["suffix"] == "2024-05-01"
    assert run["runtime_config"]["parameters"]["sort_by"] == "007"


def test_token_from_the_projected_service_account_file(kfp_api, package, monkeypatch, tmp_path):
    monkeypatch.delenv("KF_PIPELINES_TOKEN")
    token = tmp_path / "token"
    token.write_text("projected-token")
    monkeypatch.setenv("KF_PIPELINES_SA_TOKEN_PATH", str(token))
    argv = ["run", "filter-dataset", "--package", str(package), "--param", "input_dir=gs://b/d"]
    assert submit.main(argv) == 0
    assert kfp_api.auth == {"Bearer projected-token"}


def test_no_endpoint_is_a_usage_error(monkeypatch, package, capsys):
    monkeypatch.delenv("KF_PIPELINES_ENDPOINT", raising=False)
    monkeypatch.delenv("KUBERNETES_SERVICE_HOST", raising=False)
    argv = ["run", "filter-dataset", "--package", str(package), "--param", "input_dir=gs://b/d"]
    assert submit.main(argv) == submit.EXIT_USAGE
    assert "KF_PIPELINES_ENDPOINT" in capsys.readouterr().err


def test_run_compiles_the_registered_pipeline_with_the_image_tag(kfp_api):
    argv = ["run", "filter-dataset", "--image-tag", "fedcba987654", "--param", "input_dir=gs://b"]
    assert submit.main(argv) == 0
    (run,) = kfp_api.runs.values()
    pipeline, _ = parse_spec_strictly(run["pipeline_spec"])
    assert images_of(pipeline) == {cfg.image_ref("cpu", "fedcba987654")}
    assert submit.main(["run", "no-such-pipeline", "--image-tag", "x1"]) == submit.EXIT_USAGE
    assert submit.main(["run", "filter-dataset", "--image-tag", "latest"]) != 0


def test_a_package_that_breaks_the_settings_is_not_sent(kfp_api, package, tmp_path, capsys):
    broken = tmp_path / "broken.yaml"
    text = package.read_text().replace(
        "activeDeadlineSeconds: '7200'", "activeDeadlineSeconds: '60'"
    )
    broken.write_text(text)
    argv = ["run", "filter-dataset", "--package", str(broken), "--param", "input_dir=gs://b"]
    assert submit.main(argv) == submit.EXIT_USAGE
    assert "timeout" in capsys.readouterr().err
    assert kfp_api.calls == []


def test_upload_adds_one_version_per_commit(kfp_api, package, tmp_path, capsys):
    other = tmp_path / "other.yaml"
    other.write_text(package.read_text().replace(f":{TAG}\n", ":aaaabbbbcccc\n"))
    up = ["upload", "filter-dataset", "--package"]
    assert submit.main([*up, str(package)]) == 0
    assert submit.main([*up, str(package)]) == 0  # same commit again: nothing new
    assert submit.main([*up, str(other)]) == 0
    assert kfp_api.errors == []
    assert kfp_api.auth == {"Bearer test-token"}
    (pipeline,) = kfp_api.pipelines.values()
    assert pipeline["display_name"] == "lanepaint-filter-dataset"
    names = [v["display_name"] for v in kfp_api.versions[pipeline["pipeline_id"]]]
    assert names == [
        "lanepaint-filter-dataset",  # the version the first upload creates
        f"lanepaint-filter-dataset-{TAG}",
        "lanepaint-filter-dataset-aaaabbbbcccc",
    ]
    assert "already uploaded" in capsys.readouterr().out
    last = kfp_api.uploads[-1]
    assert images_of(last["docs"][0]) == {cfg.image_ref("cpu", "aaaabbbbcccc")}
    assert "input_dir: STRING (required)" in last["description"]
    assert 'color: STRING = "any"' in last["description"]
    assert "images :aaaabbbbcccc" in last["description"]


def test_schedule_creates_a_dated_recurring_run(kfp_api, dated_package, tmp_path):
    params = tmp_path / "p.yaml"
    params.write_text("input_dir: gs://lanepaint-data/dataset\n")
    argv = ["schedule", "dated-filter", "--package", str(dated_package), "--params", str(params)]
    assert submit.main(argv) == 0
    assert kfp_api.errors == []
    (rec,) = kfp_api.recurring.values()
    sched = cfg.settings()["schedule"]
    assert rec["display_name"] == "lanepaint-dated-filter"
    assert rec["trigger"] == {"cron_schedule": {"cron": sched["cron"]}}
    assert int(rec["max_concurrency"]) == 1
    assert rec["no_catchup"] is True
    assert rec["mode"] == "ENABLE"
    assert rec["service_account"] == "lanepaint-pipeline-runner"
    assert rec["runtime_config"]["parameters"] == {
        "input_dir": "gs://lanepaint-data/dataset",
        "run_date": "[[ScheduledTime.2006-01-02T150405Z]]",
    }
    pipeline, _ = parse_spec_strictly(rec["pipeline_spec"])
    assert pipeline["pipelineInfo"]["name"] == "dated-filter"


def test_schedule_refuses_a_duplicate_unless_replacing(kfp_api, dated_package, capsys):
    argv = ["schedule", "dated-filter", "--package", str(dated_package), "--param", "input_dir=x"]
    assert submit.main(argv) == 0
    assert submit.main(argv) == submit.EXIT_USAGE
    assert "--replace" in capsys.readouterr().err
    assert submit.main([*argv, "--replace", "--cron", "0 30 2 * * 1", "--catchup"]) == 0
    assert kfp_api.errors == []
    old, new = kfp_api.recurring.values()
    assert old["status"] == "DISABLED" and new["status"] == "ENABLED"
    assert new["trigger"]["cron_schedule"]["cron"] == "0 30 2 * * 1"
    assert new["no_catchup"] is False


def test_schedule_needs_a_date_parameter_it_sets_itself(kfp_api, package, dated_package, capsys):
    argv = ["schedule", "filter-dataset", "--package", str(package), "--param", "input_dir=x"]
    assert submit.main(argv) == submit.EXIT_USAGE
    assert "dated prefix" in capsys.readouterr().err
    argv = ["schedule", "dated-filter", "--package", str(dated_package), "--param", "input_dir=x"]
    assert submit.main([*argv, "--param", "run_date=2024-01-01"]) == submit.EXIT_USAGE
    assert kfp_api.calls == []


def test_unknown_fields_are_refused_by_the_model_check():
    assert unknown_fields({"display_name": "x", "service_acount": "sa"}, "V2beta1Run") == [
        ".service_acount: not a field of V2beta1Run"
    ]
    assert unknown_fields({"mode": "ON"}, "V2beta1RecurringRun") == [
        ".mode: 'ON' not in RecurringRunMode"
    ]


def test_upload_without_names_uploads_every_registered_pipeline(kfp_api):
    from pipelines.compile import PIPELINES

    assert submit.main(["upload", "--image-tag", TAG]) == 0
    assert kfp_api.errors == []
    names = {p["display_name"] for p in kfp_api.pipelines.values()}
    assert names == {f"lanepaint-{name}" for name in PIPELINES}
    for upload in kfp_api.uploads:
        assert {i.rsplit(":", 1)[1] for i in images_of(upload["docs"][0])} == {TAG}


def test_default_schedule_is_the_registered_dataset_build(kfp_api):
    from pipelines.compile import PIPELINES

    assert cfg.settings()["schedule"]["pipeline"] in PIPELINES
    argv = ["schedule", "--image-tag", TAG, "--param", "source=gs://videos"]
    assert submit.main([*argv, "--param", "output_root=gs://lanepaint-data/datasets"]) == 0
    assert kfp_api.errors == []
    (rec,) = kfp_api.recurring.values()
    assert rec["display_name"] == "lanepaint-dataset-build"
    params = rec["runtime_config"]["parameters"]
    assert params["run_date"] == cfg.settings()["schedule"]["date_value"]
    assert params["output_root"] == "gs://lanepaint-data/datasets"


def test_api_refusals_exit_3_and_transient_poll_errors_are_waited_out(kfp_api, package, capsys):
    argv = ["run", "filter-dataset", "--package", str(package), "--param", "input_dir=gs://b"]
    kfp_api.inject = [("POST", "/apis/v2beta1/runs", 403)]
    assert submit.main(argv) == submit.EXIT_API
    assert "403" in capsys.readouterr().err and not kfp_api.runs
    kfp_api.inject = [("GET", "/apis/v2beta1/runs/.+", 503)] * 2
    assert submit.main([*argv, "--wait", "--poll", "0.01"]) == 0
    assert "polling run" in capsys.readouterr().err
    kfp_api.run_states = ["RUNNING"]
    kfp_api.inject = [("GET", "/apis/v2beta1/runs/.+", 503)] * 9
    assert submit.main([*argv, "--wait", "--poll", "0.01"]) == submit.EXIT_API


def test_usage_errors_return_instead_of_exiting(capsys):
    assert submit.main(["run"]) == 2
    assert submit.main(["--help"]) == 0
    assert "run-pipeline" in capsys.readouterr().out
