#!/usr/bin/env python3
"""A fake OpenAI-compatible server for benchmarks: every chat completion answers after a
fixed delay. Standard library only (asyncio streams and a minimal HTTP/1.1 parser with
keep-alive, Content-Length and chunked request bodies).

    python3 bench/fake_openai.py --delay-ms 200      # prints "PORT <n>" on stdout
    kill -TERM <pid>                                 # prints the counters on stderr, exits

Endpoints:
    POST .../chat/completions  non-streaming completion after --delay-ms
                               (a `"stream": true` request gets one SSE chunk and [DONE])
    GET  /stats                JSON counters (see Stats.snapshot)
    POST /reset                zero the counters (peaks included), answers the old ones
    anything else              404

The counters show what the client did: `requests`, `peak_in_flight` (requests being
delayed at the same time), `connections` accepted and `peak_open_connections`, and the
spread of request arrivals (`arrival_spread_ms`: first to last request since the reset),
which tells a client that dispatches late from a server that answers late.
"""

import argparse
import asyncio
import json
import os
import signal
import sys
import time

MAX_HEADER = 64 * 1024
MAX_BODY = 16 * 1024 * 1024


class Stats:
    def __init__(self):
        self.reset()
        self.in_flight = 0
        self.open_connections = 0

    def reset(self):
        self.requests = 0
        self.completions = 0
        self.errors = 0
        self.connections = 0
        self.peak_in_flight = getattr(self, "in_flight", 0)
        self.peak_open_connections = getattr(self, "open_connections", 0)
        self.first_arrival = None
        self.last_arrival = None
        self.last_response = None

    def snapshot(self):
        ms = lambda a, b: round((b - a) * 1000.0, 1) if a is not None and b is not None else None
        return {
            "requests": self.requests,            # completion requests received
            "completions": self.completions,      # completion responses written
            "errors": self.errors,                # malformed requests (400) and 404s
            "in_flight": self.in_flight,
            "peak_in_flight": self.peak_in_flight,
            "connections": self.connections,      # accepted since the reset
            "open_connections": self.open_connections,
            "peak_open_connections": self.peak_open_connections,
            "arrival_spread_ms": ms(self.first_arrival, self.last_arrival),
            "busy_span_ms": ms(self.first_arrival, self.last_response),
        }


class BadRequest(Exception):
    pass


def response_bytes(status, body, content_type="application/json", keep_alive=True):
    reason = {200: "OK", 400: "Bad Request", 404: "Not Found", 405: "Method Not Allowed"}
    head = (
        f"HTTP/1.1 {status} {reason.get(status, 'Status')}\r\n"
        f"Content-Type: {content_type}\r\n"
        f"Content-Length: {len(body)}\r\n"
        f"Connection: {'keep-alive' if keep_alive else 'close'}\r\n"
        "\r\n"
    )
    return head.encode("latin-1") + body


async def read_request(reader):
    """Returns (method, target, version, headers, body) or None at a clean end of stream."""
    try:
        head = await reader.readuntil(b"\r\n\r\n")
    except asyncio.IncompleteReadError as e:
        if not e.partial.strip():
            return None
        raise BadRequest("truncated request head")
    except asyncio.LimitOverrunError:
        raise BadRequest("request head too large")
    lines = head.decode("latin-1").split("\r\n")
    try:
        method, target, version = lines[0].split(" ", 2)
    except ValueError:
        raise BadRequest(f"bad request line {lines[0]!r}")
    headers = {}
    for line in lines[1:]:
        if not line:
            continue
        name, sep, value = line.partition(":")
        if not sep:
            raise BadRequest(f"bad header line {line!r}")
        headers[name.strip().lower()] = value.strip()
    body = b""
    if "chunked" in headers.get("transfer-encoding", "").lower():
        parts = []
        while True:
            size_line = await reader.readuntil(b"\r\n")
            size = int(size_line.split(b";", 1)[0].strip() or b"0", 16)
            if size == 0:
                while (await reader.readuntil(b"\r\n")) != b"\r\n":  # trailers
                    pass
                break
            parts.append(await reader.readexactly(size))
            await reader.readexactly(2)
        body = b"".join(parts)
    elif "content-length" in headers:
        try:
            n = int(headers["content-length"])
        except ValueError:
            raise BadRequest("bad Content-Length")
        if n < 0 or n > MAX_BODY:
            raise BadRequest("Content-Length out of range")
        body = await reader.readexactly(n)
    return method, target, version, headers, body


def completion_body(request, delay_ms):
    messages = request.get("messages") or []
    prompt = "".join(str(m.get("content", "")) for m in messages if isinstance(m, dict))
    content = f"fake answer after {delay_ms} ms to {len(prompt)} characters"
    prompt_tokens = max(1, len(prompt) // 4)
    completion_tokens = max(1, len(content) // 4)
    max_tokens = request.get("max_tokens")
    return {
        "id": "chatcmpl-fake",
        "object": "chat.completion",
        "created": int(time.time()),
        "model": request.get("model", "fake"),
        "choices": [{
            "index": 0,
            "message": {"role": "assistant", "content": content},
            "finish_reason": "length" if isinstance(max_tokens, int) and max_tokens < completion_tokens else "stop",
        }],
        "usage": {
            "prompt_tokens": prompt_tokens,
            "completion_tokens": completion_tokens,
            "total_tokens": prompt_tokens + completion_tokens,
        },
    }


def sse_body(doc):
    chunk = {
        "id": doc["id"], "object": "chat.completion.chunk", "created": doc["created"],
        "model": doc["model"],
        "choices": [{"index": 0, "delta": {"role": "assistant",
                                           "content": doc["choices"][0]["message"]["content"]},
                     "finish_reason": doc["choices"][0]["finish_reason"]}],
    }
    usage = {"id": doc["id"], "object": "chat.completion.chunk", "created": doc["created"],
             "model": doc["model"], "choices": [], "usage": doc["usage"]}
    return (f"data: {json.dumps(chunk)}\n\ndata: {json.dumps(usage)}\n\ndata: [DONE]\n\n").encode()


class Server:
    def __init__(self, delay_ms):
        self.delay_ms = delay_ms
        self.delay = delay_ms / 1000.0
        self.stats = Stats()

    async def handle(self, reader, writer):
        st = self.stats
        st.connections += 1
        st.open_connections += 1
        st.peak_open_connections = max(st.peak_open_connections, st.open_connections)
        try:
            while True:
                try:
                    req = await read_request(reader)
                except BadRequest as e:
                    st.errors += 1
                    writer.write(response_bytes(400, json.dumps({"error": str(e)}).encode(),
                                                keep_alive=False))
                    await writer.drain()
                    return
                if req is None:
                    return
                method, target, version, headers, body = req
                conn = headers.get("connection", "").lower()
                keep_alive = ("close" not in conn) if version == "HTTP/1.1" else ("keep-alive" in conn)
                path = target.split("?", 1)[0]
                if path.endswith("/chat/completions"):
                    if method != "POST":
                        st.errors += 1
                        out = response_bytes(405, b'{"error":"use POST"}', keep_alive=keep_alive)
                    else:
                        out = await self.completion(body, keep_alive)
                elif path == "/stats" and method == "GET":
                    out = response_bytes(200, json.dumps(st.snapshot()).encode(), keep_alive=keep_alive)
                elif path == "/reset" and method == "POST":
                    snap = st.snapshot()
                    st.reset()
                    out = response_bytes(200, json.dumps(snap).encode(), keep_alive=keep_alive)
                else:
                    st.errors += 1
                    out = response_bytes(404, b'{"error":{"message":"not found","type":"not_found"}}',
                                         keep_alive=keep_alive)
                writer.write(out)
                await writer.drain()
                if not keep_alive:
                    return
        except (ConnectionError, asyncio.IncompleteReadError, asyncio.LimitOverrunError):
            pass
        finally:
            st.open_connections -= 1
            writer.close()

    async def completion(self, body, keep_alive):
        st = self.stats
        now = time.perf_counter()
        st.requests += 1
        if st.first_arrival is None:
            st.first_arrival = now
        st.last_arrival = now
        st.in_flight += 1
        st.peak_in_flight = max(st.peak_in_flight, st.in_flight)
        try:
            try:
                request = json.loads(body)
                if not isinstance(request, dict) or not isinstance(request.get("messages"), list):
                    raise ValueError("`messages` must be a list")
            except ValueError as e:
                st.errors += 1
                err = {"error": {"message": f"bad request body: {e}", "type": "invalid_request_error"}}
                return response_bytes(400, json.dumps(err).encode(), keep_alive=keep_alive)
            # Sleep until a fixed deadline from arrival, so parsing does not add to the delay.
            await asyncio.sleep(max(0.0, now + self.delay - time.perf_counter()))
            doc = completion_body(request, self.delay_ms)
            st.completions += 1
            st.last_response = time.perf_counter()
            if request.get("stream"):
                return response_bytes(200, sse_body(doc), "text/event-stream", keep_alive)
            return response_bytes(200, json.dumps(doc).encode(), keep_alive=keep_alive)
        finally:
            st.in_flight -= 1


async def main_async(args):
    server = Server(args.delay_ms)
    srv = await asyncio.start_server(server.handle, args.host, args.port, backlog=args.backlog,
                                     limit=MAX_HEADER, reuse_address=True)
    port = srv.sockets[0].getsockname()[1]
    print(f"PORT {port}", flush=True)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        try:
            loop.add_signal_handler(sig, stop.set)
        except (NotImplementedError, RuntimeError):
            pass
    async with srv:
        await stop.wait()
    if not args.quiet:
        print(json.dumps(server.stats.snapshot()), file=sys.stderr, flush=True)


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--port", type=int, default=0, help="0 = any free port (default)")
    ap.add_argument("--delay-ms", type=int, default=200, help="delay of every completion (200)")
    ap.add_argument("--backlog", type=int, default=4096,
                    help="listen backlog (the kernel caps it at net.core.somaxconn)")
    ap.add_argument("--quiet", action="store_true", help="do not print the counters on exit")
    args = ap.parse_args()
    # One socket per client connection: make sure the descriptor limit is not the cap.
    try:
        import resource
        soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
        want = hard if hard != resource.RLIM_INFINITY else 65536
        if soft < want:
            resource.setrlimit(resource.RLIMIT_NOFILE, (want, hard))
    except (ImportError, ValueError, OSError):
        pass
    asyncio.run(main_async(args))


if __name__ == "__main__":
    main()
