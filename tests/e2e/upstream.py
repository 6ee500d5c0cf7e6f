"""The MCP server behind Envoy in `tests/mcp_clients.rs`: an MCPServer (FastMCP in mcp 1.x) with
tools, prompts and resources over streamable HTTP, run with the mcp 2.x SDK so that it speaks both
the initialize-handshake protocols (mcp 1.x and TypeScript clients) and 2026-07-28.

Every POST that reaches it is appended to the `--record` file as one JSON line (path, request
headers, JSON-RPC method, name, uri and id), so a test can tell what got through and with which
headers (`x-would-deny`, `x-would-deny-reason`).

    python upstream.py --port 8080 --record seen.jsonl [--response json|sse]

`--response json` answers each POST with one `application/json` body; `sse` answers with a
`text/event-stream`, the SDK's default.
"""

import argparse
import json

import uvicorn
from mcp.server.mcpserver import MCPServer
from mcp.server.transport_security import TransportSecuritySettings

mcp = MCPServer("mcp-authz-e2e", log_level="WARNING")


@mcp.tool()
def search(query: str = "") -> str:
    """Searches the documents (allowed by the enforce grant)."""
    return f"results for {query!r}"


@mcp.tool()
def delete_records(table: str = "") -> str:
    """Deletes records (a deny rule of the enforce grant)."""
    return f"deleted {table!r}"


@mcp.tool()
def export_report() -> str:
    """Exports a report (allowed, but a monitor grant's deny rule would deny it)."""
    return "exported"


@mcp.prompt()
def summarize(topic: str = "") -> str:
    """A prompt the enforce grant allows."""
    return f"Summarize {topic}."


@mcp.prompt()
def admin_prompt() -> str:
    """A prompt the enforce grant denies."""
    return "You are the administrator."


@mcp.resource("docs://public/readme")
def readme() -> str:
    """A resource under the allowed prefix."""
    return "public readme"


@mcp.resource("docs://secret/keys")
def keys() -> str:
    """A resource under the denied prefix."""
    return "secret keys"


class Recorder:
    """ASGI middleware: records each POST, then hands the same body on to the MCP app."""

    def __init__(self, app, path):
        self.app = app
        self.path = path

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http" or scope["method"] != "POST":
            await self.app(scope, receive, send)
            return
        messages, body = await read_request(receive)
        self.record(scope, body)
        await self.app(scope, replay(messages, receive), send)

    def record(self, scope, body):
        call = json_rpc_call(body)
        params = call.get("params") if isinstance(call.get("params"), dict) else {}
        line = {
            "path": scope["path"],
            "headers": {k.decode("latin-1"): v.decode("latin-1") for k, v in scope["headers"]},
            "method": call.get("method"),
            "name": params.get("name"),
            "uri": params.get("uri"),
            "id": call.get("id"),
        }
        with open(self.path, "a", encoding="utf-8") as out:
            out.write(json.dumps(line) + "\n")


async def read_request(receive):
    """The ASGI messages of a request body, and the body."""
    messages = []
    while True:
        message = await receive()
        messages.append(message)
        if message["type"] != "http.request" or not message.get("more_body"):
            break
    return messages, b"".join(m.get("body", b"") for m in messages)


def replay(messages, receive):
    """An ASGI `receive` that hands on the messages already read, then the real ones."""
    pending = iter(messages)

    async def receive_again():
        # Once the body is handed on, further reads wait for the disconnect.
        return next(pending, None) or await receive()

    return receive_again


def json_rpc_call(body):
    """The body's JSON object, or {} (a batch or anything else is not one call)."""
    try:
        message = json.loads(body)
    except ValueError:
        return {}
    return message if isinstance(message, dict) else {}


def app(response):
    return mcp.streamable_http_app(
        json_response=response == "json",
        # Envoy forwards the client's Host; the upstream is only reached through it.
        transport_security=TransportSecuritySettings(enable_dns_rebinding_protection=False),
    )


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--record", required=True)
    parser.add_argument("--response", choices=["json", "sse"], default="json")
    args = parser.parse_args()
    recorder = Recorder(app(args.response), args.record)
    uvicorn.run(recorder, host="127.0.0.1", port=args.port, log_level="warning")


if __name__ == "__main__":
    main()
