"""A local stand-in for the Globus Compute web service, on http://localhost:5000.

It serves the routes the real SDK (``Executor``, ``Client``) and the endpoint registration use,
and moves tasks and results through a RabbitMQ broker exactly as the cloud does: tasks go to
each endpoint's queue with the headers the endpoint reads, results come back on the ``results``
exchange and are forwarded, bytes unchanged, to the queue of their task group, which the SDK's
result watcher consumes. Everything it must remember lives in `State`, so it can be restarted
while endpoints and executors keep running.

Run it as ``python -m colmena_fed.testbed.service --state-dir DIR`` with the broker's URL in
``COLMENA_FED_TESTBED_AMQP_URL`` (kept out of the command line, which other users can read).
"""

from __future__ import annotations

import argparse
import contextlib
import hmac
import json
import logging
import os
import signal
import threading
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pika
import pika.exceptions
from flask import Flask, Response, jsonify, request
from globus_compute_common import messagepack
from globus_compute_common.messagepack.message_types import EPStatusReport, Result, Task
from werkzeug.exceptions import HTTPException
from werkzeug.serving import make_server

from colmena_fed.testbed.state import State
from colmena_fed.testbed.token import TOKEN_VARIABLE

#: The SDK's ``Client(local_compute_services=True)`` talks to this address, and no other.
HOST, PORT = "127.0.0.1", 5000
#: Globus Compute refuses a submission over 10 MB (the whole batch).
SUBMIT_LIMIT_BYTES = 10 * 2**20
#: Result queues are named this plus the task group id.
QUEUE_PREFIX = "colmena-fed.results."
AMQP_URL_VARIABLE = "COLMENA_FED_TESTBED_AMQP_URL"

log = logging.getLogger(__name__)


class Publisher:
    """One publishing connection to RabbitMQ, shared by the request threads, reopened on loss."""

    def __init__(self, url: str) -> None:
        """Publish through the broker at ``url``."""
        self.url = url
        self._lock = threading.Lock()
        self._connection: pika.BlockingConnection | None = None
        self._channel: Any = None

    def run(self, action: Callable[[Any], None]) -> None:
        """Run ``action(channel)``; after a lost connection, reconnect and run it once more."""
        with self._lock:
            for attempt in (1, 2):
                try:
                    if self._channel is None or not self._channel.is_open:
                        self._connect()
                    action(self._channel)
                    self._channel.tx_commit()
                    return
                except pika.exceptions.AMQPConnectionError:
                    self._channel = None
                    if attempt == 2:
                        raise

    def _connect(self) -> None:
        if self._connection is not None and self._connection.is_open:
            self._connection.close()
        self._connection = pika.BlockingConnection(pika.URLParameters(self.url))
        self._channel = self._connection.channel()
        # Each action is one transaction: a submission's tasks are all queued, or none is,
        # at the cost of one round trip to the broker rather than one per task.
        self._channel.tx_select()

    def declare_exchanges(self) -> None:
        """The exchanges and shared queues endpoints publish to (they only declare passively)."""

        def declare(channel: Any) -> None:
            channel.exchange_declare("tasks", "direct", durable=True)
            for name in ("results", "heartbeats"):
                channel.exchange_declare(name, "topic", durable=True)
                channel.queue_declare(name, durable=True)
                channel.queue_bind(name, name, f"*.{name}")

        self.run(declare)

    def declare_endpoint(self, endpoint_id: str) -> None:
        """The task queue of one endpoint."""

        def declare(channel: Any) -> None:
            queue = f"{endpoint_id}.tasks"
            channel.queue_declare(queue, durable=True)
            channel.queue_bind(queue, "tasks", queue)

        self.run(declare)

    def close(self) -> None:
        """Close the connection."""
        with self._lock:
            if self._connection is not None and self._connection.is_open:
                self._connection.close()
            self._connection = self._channel = None


def endpoint_credentials(endpoint_id: str, url: str) -> dict[str, Any]:
    """The registration answer an endpoint starts with: where its queues are."""

    def publishing(exchange: str) -> dict[str, Any]:
        return {
            "connection_url": url,
            "exchange": exchange,
            "queue": exchange,
            "queue_publish_kwargs": {
                "exchange": exchange,
                "routing_key": f"{endpoint_id}.{exchange}",
                "mandatory": True,
                "properties": {"delivery_mode": 2},
            },
        }

    return {
        "endpoint_id": endpoint_id,
        "task_queue_info": {
            "connection_url": url,
            "exchange": "tasks",
            "queue": f"{endpoint_id}.tasks",
        },
        "result_queue_info": publishing("results"),
        "heartbeat_queue_info": publishing("heartbeats"),
    }


def is_online(heartbeat_t: float | None, global_state: dict[str, Any]) -> bool:
    """Online: an active endpoint heard from within three heartbeat periods."""
    if heartbeat_t is None or not global_state.get("active", True):
        return False
    period = float(global_state.get("heartbeat_period", 30))
    return time.time() - heartbeat_t < 3 * period


def create_app(state: State, broker: Publisher, token: str) -> Flask:
    """The web service: Globus Compute's v2/v3 routes over ``state`` and ``broker``.

    Every route answers only requests bearing ``token`` (401 otherwise).
    """
    app = Flask("colmena-fed-testbed")
    app.config["MAX_CONTENT_LENGTH"] = SUBMIT_LIMIT_BYTES
    expected = f"Bearer {token}".encode()

    def error(status: int, code: str, message: str) -> tuple[Response, int]:
        return jsonify({"code": code, "message": message}), status

    @app.before_request
    def authenticate() -> tuple[Response, int] | None:
        given = request.headers.get("Authorization", "").encode()
        if hmac.compare_digest(given, expected):
            return None
        return error(401, "AUTHENTICATION_ERROR", "a testbed request needs the testbed's token")

    # Failures to inject, as the cloud produces them: {route name: [(HTTP status, times)]}.
    faults: dict[str, list[list[int]]] = {}
    faults_lock = threading.Lock()
    fault_codes = {401: "AUTHENTICATION_ERROR", 429: "RATE_LIMITED", 503: "SERVICE_UNAVAILABLE"}

    @app.post("/testbed/faults")
    def inject_fault() -> Response:
        """Testbed only: answer the next ``times`` requests to ``route`` with ``status``."""
        body = request.get_json()
        with faults_lock:
            faults.setdefault(body["route"], []).append([int(body["status"]), int(body["times"])])
            return jsonify({"faults": faults})

    @app.before_request
    def injected_fault() -> tuple[Response, int] | None:
        with faults_lock:
            pending = faults.get(request.endpoint or "")
            if not pending:
                return None
            status = pending[0][0]
            pending[0][1] -= 1
            if pending[0][1] <= 0:
                pending.pop(0)
        code = fault_codes.get(status, "ERROR")
        return error(status, code, f"injected by the testbed ({code})")

    @app.errorhandler(HTTPException)
    def http_error(exc: HTTPException) -> tuple[Response, int]:
        code = "PAYLOAD_TOO_LARGE" if exc.code == 413 else (exc.name or "ERROR").upper()
        return error(exc.code or 500, code, exc.description or str(exc))

    @app.get("/v2/version")
    def version() -> Response:
        return jsonify(
            {"api": "1.0.0", "min_sdk_version": "1.0.0", "min_ep_version": "1.0.0"}
            if request.args.get("service") == "all"
            else "1.0.0"
        )

    @app.post("/v3/functions")
    def register_function() -> Response:
        body = request.get_json()
        function_id = str(uuid.uuid4())
        state.add_function(function_id, body.get("function_name", ""), body["function_code"])
        return jsonify({"function_uuid": function_id})

    @app.post("/v3/endpoints")
    def register_endpoint() -> Response:
        return _register(str(uuid.uuid4()))

    @app.put("/v3/endpoints/<endpoint_id>")
    def update_endpoint(endpoint_id: str) -> Response:
        return _register(endpoint_id)

    def _register(endpoint_id: str) -> Response:
        body = request.get_json()
        broker.declare_endpoint(endpoint_id)
        state.add_endpoint(endpoint_id, body.get("display_name") or body["endpoint_name"])
        return jsonify(endpoint_credentials(endpoint_id, broker.url))

    @app.get("/v2/endpoints/<endpoint_id>")
    def endpoint_metadata(endpoint_id: str) -> Response | tuple[Response, int]:
        record = state.endpoint(endpoint_id)
        if record is None:
            return error(404, "ENDPOINT_NOT_FOUND", f"no endpoint {endpoint_id}")
        return jsonify(
            {
                "uuid": record.endpoint_id,
                "name": record.name,
                "display_name": record.name,
                "multi_user": False,
                "public": False,
                "endpoint_version": record.global_state.get("endpoint_version"),
            }
        )

    @app.get("/v2/endpoints/<endpoint_id>/status")
    def endpoint_status(endpoint_id: str) -> Response | tuple[Response, int]:
        record = state.endpoint(endpoint_id)
        if record is None:
            return error(404, "ENDPOINT_NOT_FOUND", f"no endpoint {endpoint_id}")
        details = {k: v for k, v in record.global_state.items() if k != "config_raw"}
        online = is_online(record.heartbeat_t, record.global_state)
        return jsonify({"status": "online" if online else "offline", "details": details})

    @app.post("/v3/endpoints/<endpoint_id>/submit")
    def submit(endpoint_id: str) -> Response | tuple[Response, int]:
        if state.endpoint(endpoint_id) is None:
            return error(404, "ENDPOINT_NOT_FOUND", f"no endpoint {endpoint_id}")
        body = request.get_json()
        group = body.get("task_group_id") or str(uuid.uuid4())
        spec = json.dumps(body.get("resource_specification"))
        serializers = body.get("result_serializers")
        codes = {}
        for function_id in body["tasks"]:
            code = state.function_code(function_id)
            if code is None:
                return error(404, "FUNCTION_NOT_FOUND", f"no function {function_id}")
            codes[function_id] = code
        messages, rows, answer = [], [], {}
        for function_id, payloads in body["tasks"].items():
            answer[function_id] = ids = [str(uuid.uuid4()) for _ in payloads]
            for task_id, payload in zip(ids, payloads, strict=True):
                rows.append((task_id, group, endpoint_id, function_id))
                task = Task(task_id=uuid.UUID(task_id), task_buffer=codes[function_id] + payload)
                headers: dict[str, Any] = {
                    "function_uuid": function_id,
                    "task_uuid": task_id,
                    "resource_specification": spec,
                }
                if serializers:
                    headers["result_serializers"] = serializers
                messages.append((messagepack.pack(task), headers))
        # Recorded before published: a result can come back before this request returns.
        state.add_tasks(rows)

        def publish(channel: Any) -> None:
            if body.get("create_queue", True):
                channel.queue_declare(QUEUE_PREFIX + group, durable=True)
            for packed, headers in messages:
                properties = pika.BasicProperties(delivery_mode=2, headers=headers)
                channel.basic_publish("tasks", f"{endpoint_id}.tasks", packed, properties)

        broker.run(publish)
        return jsonify(
            {
                "request_id": str(uuid.uuid4()),
                "task_group_id": group,
                "endpoint_id": endpoint_id,
                "tasks": answer,
            }
        )

    @app.get("/v2/get_amqp_result_connection_url")
    def result_connection() -> Response:
        return jsonify({"connection_url": broker.url, "queue_prefix": QUEUE_PREFIX})

    def task_document(task_id: str) -> dict[str, Any] | None:
        record = state.task(task_id)
        if record is None:
            return None
        document: dict[str, Any] = {"task_id": task_id, "status": record.status}
        if record.completion_t is not None:
            document["completion_t"] = str(record.completion_t)
            document["exception" if record.failed else "result"] = record.data
        return document

    @app.get("/v2/tasks/<task_id>")
    def get_task(task_id: str) -> Response | tuple[Response, int]:
        document = task_document(task_id)
        if document is None:
            return error(404, "TASK_NOT_FOUND", f"no task {task_id}")
        return jsonify(document)

    @app.post("/v2/batch_status")
    def batch_status() -> Response:
        results = {}
        for task_id in request.get_json()["task_ids"]:
            document = task_document(task_id)
            if document is not None:
                results[task_id] = document
        return jsonify({"response": "batch", "results": results})

    @app.get("/v2/taskgroup/<group>")
    def task_group(group: str) -> Response:
        tasks = [{"id": task_id} for task_id in state.group_tasks(group)]
        return jsonify({"taskgroup_id": group, "tasks": tasks})

    return app


class Forwarder(threading.Thread):
    """Consumes endpoints' results and heartbeats; forwards each result to its task group.

    Messages are handled in batches (whatever arrived within a few milliseconds): their
    records written in one transaction, the results forwarded, then all acknowledged at once,
    so a message is acknowledged only once its result is recorded and forwarded.
    """

    def __init__(self, state: State, url: str) -> None:
        """Consume from the broker at ``url``, recording into ``state``."""
        super().__init__(name="testbed-forwarder", daemon=True)
        self.state = state
        self.url = url
        self.stopping = threading.Event()
        self._results: list[tuple[Result, bytes]] = []
        self._last_tag = 0

    def run(self) -> None:
        """Consume until `stopping` is set, reconnecting whenever the broker goes away."""
        while not self.stopping.is_set():
            try:
                connection = pika.BlockingConnection(pika.URLParameters(self.url))
                channel = connection.channel()
                channel.basic_qos(prefetch_count=1024)
                channel.basic_consume("results", self._on_result)
                channel.basic_consume("heartbeats", self._on_heartbeat)
                while not self.stopping.is_set():
                    connection.process_data_events(time_limit=0.01)
                    self._flush(channel)
                connection.close()
            except Exception as exc:  # the broker went away, or a record could not be written
                log.warning("forwarding stopped (%r); reconnecting", exc)
                self._results.clear()  # unacknowledged: the broker delivers them again
                self._last_tag = 0
                self.stopping.wait(0.5)

    def _on_result(self, _channel: Any, method: Any, _properties: Any, body: bytes) -> None:
        message = _unpack(body)
        if isinstance(message, Result):
            self._results.append((message, body))
        self._last_tag = method.delivery_tag

    def _on_heartbeat(self, _channel: Any, method: Any, _properties: Any, body: bytes) -> None:
        message = _unpack(body)
        if isinstance(message, EPStatusReport):
            self.state.heartbeat(str(message.endpoint_id), dict(message.global_state))
        self._last_tag = method.delivery_tag

    def _flush(self, channel: Any) -> None:
        """Record and forward the results received, then acknowledge everything received."""
        if self._results:
            records = [
                (str(m.task_id), m.data, m.error_details is not None) for m, _ in self._results
            ]
            groups = self.state.finish_tasks(records)
            properties = pika.BasicProperties(delivery_mode=2, timestamp=int(time.time()))
            for group, (_, body) in zip(groups, self._results, strict=True):
                if group is not None:
                    channel.basic_publish("", QUEUE_PREFIX + group, body, properties)
            self._results.clear()
        if self._last_tag:
            channel.basic_ack(self._last_tag, multiple=True)
            self._last_tag = 0


def _unpack(body: bytes) -> Any:
    """A message from an endpoint, or None (logged, then acknowledged and dropped) if unreadable."""
    try:
        return messagepack.unpack(body)
    except Exception as exc:
        log.error("dropping an unreadable message (%r): %r", exc, body[:200])
        return None


def serve(state_dir: Path, amqp_url: str, token: str) -> None:
    """Run the service on `PORT` (the SDK's local-services address) until SIGTERM or SIGINT."""
    state = State(state_dir / "service.sqlite")
    broker = Publisher(amqp_url)
    broker.declare_exchanges()
    forwarder = Forwarder(state, amqp_url)
    forwarder.start()
    server = make_server(HOST, PORT, create_app(state, broker, token), threaded=True)
    stop = threading.Thread(target=server.shutdown, name="testbed-stop", daemon=True)
    once = threading.Lock()

    def request_stop(*_: Any) -> None:
        if once.acquire(blocking=False):
            stop.start()

    signal.signal(signal.SIGTERM, request_stop)
    threading.Thread(
        target=_stop_with_parent, args=(request_stop,), name="testbed-parent", daemon=True
    ).start()
    with contextlib.suppress(KeyboardInterrupt):
        server.serve_forever()
    forwarder.stopping.set()
    forwarder.join(timeout=10)
    broker.close()
    state.close()


def _stop_with_parent(request_stop: Callable[[], None]) -> None:
    """Stop when the process that started the service dies, as endpoint daemons do.

    Its owner (a test, ``testbed up``'s supervisor) may be killed without a chance to clean
    up; the service must not outlive it holding port 5000.
    """
    parent = os.getppid()
    while os.getppid() == parent:
        time.sleep(1)
    request_stop()


def main() -> None:
    """Command line: ``python -m colmena_fed.testbed.service --state-dir DIR``."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--state-dir", type=Path, required=True)
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(name)s %(message)s")
    logging.getLogger("werkzeug").setLevel(logging.WARNING)
    serve(args.state_dir, os.environ[AMQP_URL_VARIABLE], os.environ.pop(TOKEN_VARIABLE))


if __name__ == "__main__":
    main()
