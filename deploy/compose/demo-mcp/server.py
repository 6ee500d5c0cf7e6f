"""A tiny MCP server for the demo: answers JSON-RPC over HTTP POST and echoes what reached it.

It prints the x-would-deny headers it receives, so the effect of monitor mode is visible in
`docker compose logs demo-mcp`.
"""
import json
import os
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

TOOLS = ["search", "summarize", "create_ticket", "delete_ticket"]


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def do_POST(self):
        length = int(self.headers.get("content-length") or 0)
        try:
            message = json.loads(self.rfile.read(length) or b"{}")
        except ValueError:
            message = {}
        marks = {k: v for k, v in self.headers.items() if k.lower().startswith("x-would-deny")}
        print(f"{self.path} {message.get('method')} {json.dumps(marks)}", flush=True)
        method = message.get("method")
        if method == "initialize":
            result = {"protocolVersion": "2025-06-18", "capabilities": {"tools": {}},
                      "serverInfo": {"name": "demo-mcp", "version": "1.0"}}
        elif method == "tools/list":
            result = {"tools": [{"name": t, "inputSchema": {"type": "object"}} for t in TOOLS]}
        elif method == "tools/call":
            name = (message.get("params") or {}).get("name")
            result = {"content": [{"type": "text", "text": f"{name} ran"}],
                      "wouldDeny": marks.get("x-would-deny-reason") or marks.get("X-Would-Deny-Reason")}
        else:
            result = {}
        self.reply(200, {"jsonrpc": "2.0", "id": message.get("id"), "result": result})

    def do_GET(self):
        self.reply(200, {"server": "demo-mcp"})

    def reply(self, status, body):
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)


if __name__ == "__main__":
    port = int(os.environ.get("PORT", "8080"))
    ThreadingHTTPServer((os.environ.get("HOST", "0.0.0.0"), port), Handler).serve_forever()
