"""Tools for tool-calling agents: the retriever tool and `module:function` tools from config."""

from ragworks.tools.registry import agent_tools, load_tool, load_tools
from ragworks.tools.retriever_tool import RETRIEVER_TOOL_NAME, SearchArgs, make_retriever_tool, render_results

__all__ = [
    "RETRIEVER_TOOL_NAME",
    "SearchArgs",
    "agent_tools",
    "load_tool",
    "load_tools",
    "make_retriever_tool",
    "render_results",
]
