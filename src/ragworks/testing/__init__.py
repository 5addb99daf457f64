"""Test helpers: the scripted chat model and local emulators of remote services."""

from ragworks.testing.fakes import ScriptedChatModel

__all__ = ["ScriptedChatModel"]
