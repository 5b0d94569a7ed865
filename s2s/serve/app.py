"""The FastAPI app of `s2s serve`: one POST route per method the run's task serves
(/v1/translate, /v1/transcribe, /v1/generate, /v1/score), /health, /ready, /metrics, and
FastAPI's /docs and /openapi.json. Every request is checked against the limits before it
is queued; every answer is JSON, errors as ``{"error": "..."}``."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any, Protocol

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response
from pydantic import ValidationError

from s2s.errors import S2SError
from s2s.serve.access_log import access_logger
from s2s.serve.accounting import Accounting
from s2s.serve.batcher import DynamicBatcher, Job, Joined, QueueFull, ShuttingDown
from s2s.serve.channel import DecoderDied, Reply
from s2s.serve.in_thread import InThread
from s2s.serve.metrics import ServeMetrics
from s2s.serve.requests import ROUTES, Body, Route, decode_uploads


@dataclass(frozen=True)
class ServeSettings:
    """The server's batching and limits (the options of `s2s serve`)."""

    max_batch_tokens: int = 4000
    max_wait_ms: float = 10.0
    max_queue: int = 256  # requests waiting for the decoder; more: 503
    max_inputs: int = 64  # inputs in one request
    max_input_chars: int = 2000  # characters in one text input
    max_body_bytes: int = 1 << 20
    request_timeout_s: float = 30.0
    retry_after_s: int = 1
    continuous: bool = False  # beam-search translate requests join a running search


class RequestError(Exception):
    """A request the server refuses: its status and one line saying why."""

    def __init__(self, status: int, message: str, headers: dict[str, str] | None = None):
        super().__init__(message)
        self.status, self.message, self.headers = status, message, headers or {}


def error_response(status: int, message: str, headers: dict[str, str] | None = None) -> Response:
    return JSONResponse({"error": message}, status_code=status, headers=headers)


async def read_body(request: Request, limit: int) -> bytes:
    """The body, refused (413) once it passes ``limit`` bytes, before reading it all."""
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > limit:
        raise RequestError(413, f"request body over {limit} bytes")
    body = bytearray()
    async for chunk in request.stream():
        body += chunk
        if len(body) > limit:
            raise RequestError(413, f"request body over {limit} bytes")
    return bytes(body)


def parse_body(raw: bytes, route: Route) -> Body:
    """The JSON body, its text read as `s2s translate` reads a line: bytes that are not
    UTF-8 are replaced (U+FFFD)."""
    try:
        payload = json.loads(raw.decode("utf-8", errors="replace"))
    except json.JSONDecodeError as error:
        raise RequestError(400, f"body is not JSON: {error}") from None
    try:
        return route.body.model_validate(payload)
    except ValidationError as error:
        first = error.errors()[0]
        where = ".".join(str(part) for part in first["loc"]) or "body"
        raise RequestError(422, f"{where}: {first['msg']}") from None


def check_limits(body: Body, route: Route, settings: ServeSettings) -> None:
    if len(body.inputs) > settings.max_inputs:
        raise RequestError(
            422, f"inputs: {len(body.inputs)} inputs, more than {settings.max_inputs}"
        )
    for number, text in enumerate(body.inputs if route.text else []):
        if len(text) > settings.max_input_chars:
            raise RequestError(
                422,
                f"inputs[{number}]: {len(text)} characters, more than {settings.max_input_chars}",
            )


class Decoder(Protocol):
    """Where jobs are decoded: a `DecoderProcess`, or `InThread`."""

    pid: int | None  # the decoding process, when it is not the server's own

    def run(self, method: str, options: dict[str, Any], inputs: list[Any]) -> list[Any]: ...

    def send(
        self, kind: str, method: str, options: dict[str, Any], inputs: list[Any], reply: Reply
    ) -> None: ...

    def stop(self) -> None: ...


class Decoding:
    """The model behind its batcher: what the route handlers ask. ``decoder`` decodes the
    jobs (a child process); without one, a thread of this process does (`InThread`), which
    the app stops when it ends."""

    def __init__(
        self,
        model: Any,
        settings: ServeSettings,
        metrics: ServeMetrics,
        decoder: Decoder | None = None,
    ) -> None:
        self.model, self.settings, self.metrics = model, settings, metrics
        self.owns_decoder = decoder is None
        self.decoder = decoder if decoder is not None else InThread(model)
        self.batcher = DynamicBatcher(
            self.decoder.run,
            settings.max_batch_tokens,
            settings.max_wait_ms / 1000,
            settings.max_queue,
            metrics.batch,
            self._join if settings.continuous else None,
        )
        self.ready = False

    def _join(self, method: str, options: dict[str, Any], inputs: list[Any], reply: Joined) -> None:
        self.decoder.send("join", method, options, inputs, reply)

    def joins(self, method: str, body: Body) -> bool:
        """Whether the request joins the running search: a translation with beam search."""
        if not self.settings.continuous or method != "translate":
            return False
        return self.model.joins_running_search(body.options()["beam"])

    def check_options(self, method: str, body: Body) -> None:
        """Options the model would refuse are a 422 now, not an error in a merged batch."""
        if method == "translate":
            self.model.search_sizes(body.options()["beam"], body.options()["nbest"])

    async def decode(self, method: str, body: Body) -> list[Any]:
        """The outputs of ``body``'s inputs, once the worker has decoded them."""
        loop = asyncio.get_running_loop()
        future: asyncio.Future[list[Any]] = loop.create_future()

        def settle(outputs: list[Any] | None, error: BaseException | None) -> None:
            if not future.done():
                future.set_exception(error) if error else future.set_result(outputs or [])

        def done(outputs: list[Any] | None, error: BaseException | None) -> None:
            if not loop.is_closed():
                loop.call_soon_threadsafe(settle, outputs, error)

        inputs: list[Any] = body.inputs
        if method == "transcribe":
            inputs = decode_uploads(body.inputs)
        costs = self.model.input_tokens(method, inputs)
        job = Job(method, body.options(), inputs, sum(costs), done, joins=self.joins(method, body))
        self._submit(job)
        try:
            return await asyncio.wait_for(future, self.settings.request_timeout_s)
        except TimeoutError:
            job.cancelled = True
            raise RequestError(504, f"not decoded in {self.settings.request_timeout_s} s") from None

    def _submit(self, job: Job) -> None:
        retry = {"Retry-After": str(self.settings.retry_after_s)}
        try:
            self.batcher.submit(job)
        except QueueFull:
            raise RequestError(503, "the server is busy: try again", retry) from None
        except ShuttingDown:
            raise RequestError(503, "the server is shutting down", retry) from None
        finally:
            self.metrics.queue.set(self.batcher.depth())


def route_handler(decoding: Decoding, method: str):
    route = ROUTES[method]

    async def handle(request: Request) -> Response:
        try:
            body = parse_body(await read_body(request, decoding.settings.max_body_bytes), route)
            check_limits(body, route, decoding.settings)
            decoding.check_options(method, body)
            outputs = await decoding.decode(method, body)
        except RequestError as error:
            return error_response(error.status, error.message, error.headers)
        except S2SError as error:
            return error_response(422, str(error))
        except DecoderDied as error:
            return error_response(500, str(error))
        request.state.inputs = len(body.inputs)
        return JSONResponse({"outputs": [route.show(output) for output in outputs]})

    handle.__doc__ = route.body.__doc__
    return handle


def refusal(decoding: Decoding, method: str):
    """A 404 for a method the run's task does not serve, saying which ones it does."""

    async def refuse() -> Response:
        try:
            decoding.model.input_tokens(method, [])
        except S2SError as error:
            return error_response(404, str(error))
        return error_response(404, f"no method {method}")

    return refuse


def add_routes(app: FastAPI, decoding: Decoding) -> None:
    for method in decoding.model.methods:
        schema = ROUTES[method].body.model_json_schema()
        app.add_api_route(
            f"/v1/{method}",
            route_handler(decoding, method),
            methods=["POST"],
            name=method,
            openapi_extra={
                "requestBody": {
                    "required": True,
                    "content": {"application/json": {"schema": schema}},
                }
            },
        )

    for method in ROUTES.keys() - set(decoding.model.methods):
        app.add_api_route(
            f"/v1/{method}", refusal(decoding, method), methods=["POST"], include_in_schema=False
        )

    @app.get("/health")
    def health() -> dict[str, str]:
        """The process is up."""
        return {"status": "ok"}

    @app.get("/ready")
    def ready() -> Response:
        """The model is loaded and the decoder takes requests."""
        if decoding.ready:
            methods = list(decoding.model.methods)
            pid = decoding.decoder.pid
            return JSONResponse({"status": "ready", "methods": methods, "decoder_pid": pid})
        return error_response(503, "not ready")

    @app.get("/metrics")
    def metrics() -> Response:
        """Counters in Prometheus's text format."""
        decoding.metrics.queue.set(decoding.batcher.depth())
        return Response(decoding.metrics.text(), media_type="text/plain; version=0.0.4")


def create_app(
    model: Any, settings: ServeSettings | None = None, decoder: Decoder | None = None
) -> FastAPI:
    """The app serving ``model`` (from `s2s.load`); its batcher starts with the app and, on
    shutdown, decodes every queued request before it stops. ``decoder`` (started, and
    stopped after the app) decodes the batches; without it the batcher's thread does."""
    settings = settings or ServeSettings()
    decoding = Decoding(model, settings, ServeMetrics(), decoder)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        decoding.batcher.start()
        decoding.ready = True
        yield
        decoding.ready = False
        await asyncio.to_thread(decoding.batcher.stop)
        if decoding.owns_decoder:
            await asyncio.to_thread(decoding.decoder.stop)

    app = FastAPI(title="s2s", description=f"{model!r}", lifespan=lifespan)
    app.state.decoding = decoding
    add_routes(app, decoding)
    app.add_middleware(Accounting, metrics=decoding.metrics, log=access_logger())
    return app
