"""Turn building shared by the three client codecs: system text, same-role merging, and the
placeholders for content a local model cannot read.

A codec creates one :class:`Turns`, feeds it the client's conversation in order
(:meth:`Turns.system` for system or developer text, :meth:`Turns.part` or :meth:`Turns.message`
for everything else), then reads :attr:`Turns.system_text` and :attr:`Turns.messages`.

Where system text goes: system text that comes before the first user or assistant turn is the
system prompt. System text that comes later (Anthropic's mid-conversation ``system`` messages,
OpenAI ``system``/``developer`` messages between turns) stays where the client put it, as a
``<system>`` text part of a user turn: every chat template accepts a user turn, while many
(Gemma's, for one) reject a system message after the first, and hoisting the text into the
system prompt would change the prompt's prefix on every turn, so the backend could not reuse
its cached prefix and would re-read the whole conversation each time.
"""

from __future__ import annotations

from ..ir import Message, Part, Role, Text

__all__ = ["Turns", "late_system_text", "unreadable"]


def late_system_text(text: str) -> Text:
    """The text part a system message after the first turn becomes."""
    return Text(text=f"<system>\n{text}\n</system>")


def unreadable(what: str) -> Text:
    """The placeholder for content the model cannot read (a PDF, audio, a file id): the model
    learns that something was attached instead of silently missing it."""
    return Text(text=f"[{what} omitted: this model cannot read it]")


class Turns:
    """An IR conversation under construction (see the module doc)."""

    __slots__ = ("_late_pending", "messages", "system_parts")

    def __init__(self) -> None:
        self.system_parts: list[str] = []
        self.messages: list[Message] = []
        #: True when the last message is a user turn made only of late system text, which the
        #: next user turn joins (so no two user turns follow each other).
        self._late_pending = False

    @property
    def system_text(self) -> str | None:
        """The system prompt: leading system texts joined with a blank line, or None."""
        return "\n\n".join(self.system_parts) if self.system_parts else None

    def system(self, text: str) -> None:
        """System or developer text, at this point of the conversation."""
        if not self.messages:
            self.system_parts.append(text)
        elif self.messages[-1].role is Role.USER:
            self._extend(late_system_text(text))
        else:
            self.messages.append(Message(role=Role.USER, parts=(late_system_text(text),)))
            self._late_pending = True

    def part(self, role: Role, part: Part) -> None:
        """One part; it joins the last turn when that turn has the same role."""
        if self.messages and self.messages[-1].role is role:
            self._extend(part)
        else:
            self.messages.append(Message(role=role, parts=(part,)))
        self._late_pending = False

    def parts(self, role: Role, parts: tuple[Part, ...]) -> None:
        """A whole turn's parts; they join the last turn when that turn has the same role."""
        if self.messages and self.messages[-1].role is role:
            last = self.messages[-1]
            self.messages[-1] = Message(role=role, parts=(*last.parts, *parts))
        else:
            self.messages.append(Message(role=role, parts=parts))
        self._late_pending = False

    def message(self, message: Message) -> None:
        """A whole turn kept apart from its neighbours (Chat keeps each message a turn), except
        that a user turn joins the late system text just before it."""
        if self._late_pending and message.role is Role.USER:
            last = self.messages[-1]
            self.messages[-1] = Message(role=Role.USER, parts=(*last.parts, *message.parts))
        else:
            self.messages.append(message)
        self._late_pending = False

    def _extend(self, part: Part) -> None:
        last = self.messages[-1]
        self.messages[-1] = Message(role=last.role, parts=(*last.parts, part))
