"""``text2sql mcp``: the answer pipeline as an MCP server (the official MCP Python SDK), over
stdio or streamable HTTP behind the API keys of ``serve`` (:mod:`text2sql.mcp_server.server`)."""
