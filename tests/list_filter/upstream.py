"""The MCP server behind Envoy in `tests/list_filter_e2e.rs`: FastMCP (MCP Python SDK 1.x) over
streamable HTTP at /demo/mcp, with the tools, prompts and resources of `policies/`.

    python upstream.py --port 8080 --response json|sse

`--response json` answers each POST with one `application/json` body; `sse` with a
`text/event-stream`, which is how progress notifications reach the client during a call.
"""

import argparse
import asyncio
import os

import uvicorn
from mcp.server.fastmcp import Context, FastMCP
from mcp.server.transport_security import TransportSecuritySettings

BIG_REPORT_BYTES = 1536 * 1024


def build(json_response):
    mcp = FastMCP(
        "list-filter-e2e",
        log_level="WARNING",
        streamable_http_path="/demo/mcp",
        json_response=json_response,
        # Envoy forwards the client's Host; the test runs on loopback only.
        transport_security=TransportSecuritySettings(enable_dns_rebinding_protection=False),
    )

    @mcp.tool()
    def search(query: str = "") -> str:
        """Searches tickets (read, low trust)."""
        return f"results for {query!r}"

    @mcp.tool()
    def summarize(ticket: str = "") -> str:
        """Summarizes a ticket (read, medium trust)."""
        return f"summary of {ticket!r}"

    @mcp.tool()
    def create_ticket(title: str = "") -> str:
        """Creates a ticket (write)."""
        return f"created {title!r}"

    @mcp.tool()
    def delete_ticket(ticket: str = "") -> str:
        """Deletes a ticket (destructive)."""
        return f"deleted {ticket!r}"

    @mcp.tool()
    def big_report() -> str:
        """An answer larger than Envoy's default 1 MiB buffer."""
        return "r" * BIG_REPORT_BYTES

    # A list answer larger than Envoy's default buffer, which Envoy buffers whole for mcp-authz.
    mcp.add_tool(lambda: "catalog", name="catalog", description="c" * BIG_REPORT_BYTES)

    @mcp.tool()
    async def wait_for_ack(ack: str, ctx: Context) -> str:
        """Reports progress, then waits until the client says it saw it (the file `ack`
        exists): an answer held back until the call ends would never be acknowledged."""
        await ctx.report_progress(1, 2, "started")
        for _ in range(600):
            if os.path.exists(ack):
                await ctx.report_progress(2, 2, "acknowledged")
                return "acknowledged"
            await asyncio.sleep(0.05)
        return "not acknowledged"

    @mcp.prompt()
    def triage_summary() -> str:
        """A prompt for triage."""
        return "Summarize the open tickets."

    @mcp.prompt()
    def escalation_letter() -> str:
        """A prompt for escalations."""
        return "Write an escalation letter."

    @mcp.resource("tickets://handbook")
    def handbook() -> str:
        """The support handbook."""
        return "handbook"

    @mcp.resource("tickets://open/vip/7")
    def vip_ticket() -> str:
        """A VIP ticket."""
        return "vip"

    return mcp


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--response", choices=["json", "sse"], required=True)
    args = parser.parse_args()
    app = build(args.response == "json").streamable_http_app()
    uvicorn.run(app, host="127.0.0.1", port=args.port, log_level="warning")


main()
