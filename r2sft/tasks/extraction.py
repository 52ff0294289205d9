"""Turning a model's free-form answer to a code task into the program the tests run.

Models answer in many shapes: a fenced block tagged ``python``, ``python3``, ``py`` or
nothing, prose before and after the code, no fence at all, a usage example before the
solution, the function restated with a ``__main__`` block that reads ``input()``, only the
entry-point function without the prompt's helpers, or just the indented body that continues
the prompt. Everything here is a pure function of text, built on :mod:`ast`.

**Finding code** (:func:`code_spans`). Fences are read line by line: a line starting with
three backticks (or tildes) opens a block whatever its tag, the next such line closes it
(so a closing fence is never mistaken for an opening one), an unclosed block runs to the
end, and a code line glued to its closing fence (``return x```) keeps its code. Each block,
and each stretch of text outside the blocks, is cut into the longest runs of lines that
parse as Python (prose lines do not), so prose around or inside code falls away.

**Choosing the code** (:func:`extract_code`). Blocks tagged as Python rank first, untagged
blocks second, blocks with another tag (``text``, ``bash``...) third, unfenced code last.
The last span that defines the entry point, from the best rank that has one, is the
answer; without an entry point (or when no span defines it), the longest span of the best
rank is.

**Building the program** (:func:`build_solution`). The chosen code is joined to the
prompt's own definitions: the prompt's imports, functions, classes and assignments stay
unless the model's code redefines them (HumanEval/10, 32, 38, 50 define helpers that the
entry point or the tests need). Definitions the chosen code uses but does not contain are
taken from the response's other code spans. The model's code is then pruned the way
evalplus's sanitiser does it: imports are kept, and a top-level function, class,
assignment or compound statement is kept only when it binds a name the entry point (or the
prompt) needs, directly or through other kept definitions. Everything else -- ``__main__``
blocks, prints, asserts, calls at module level, anything that reads stdin or exits the
process -- is dropped, because it either does nothing for the tests or breaks them (a
blocking ``input()``, an early ``sys.exit(0)`` that would pass without running a test).
When the chosen code does not define the entry point but the prompt does, the response is
read as a body completing the prompt's function (the longest prefix that parses after
it).
"""

from __future__ import annotations

import ast
import builtins
import re
import textwrap
from collections.abc import Iterable
from dataclasses import dataclass
from functools import cached_property

PYTHON_TAGS = frozenset({"python", "python3", "python2", "py", "py3", "ipython"})
"""Fence tags read as Python (case-insensitive, punctuation ignored: ``{.python}``)."""

# Ranks of a code span: lower is preferred.
_PYTHON, _UNTAGGED, _OTHER_TAG, _UNFENCED = 0, 1, 2, 3

_FENCE = re.compile(r"^[ \t]*(`{3,}|~{3,})[ \t]*([^\s`]*)")
_COMPOUND = (ast.For, ast.AsyncFor, ast.While, ast.If, ast.With, ast.AsyncWith, ast.Try)
_COMPOUND += tuple(getattr(ast, name) for name in ("TryStar", "Match") if hasattr(ast, name))
_DEFINITIONS = (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)
# Calls that read stdin or end the process: a top-level statement making one is dropped.
_STOP_NAMES = frozenset({"input", "exit", "quit", "breakpoint"})
_STOP_ATTRIBUTES = frozenset(
    {("sys", "exit"), ("sys", "stdin"), ("os", "_exit"), ("unittest", "main"), ("pytest", "main")}
)
_BUILTINS = frozenset(dir(builtins))


@dataclass(frozen=True)
class CodeSpan:
    """A run of lines of a response that parses as Python.

    Attributes:
        text: the code, dedented, ending with a newline.
        rank: 0 Python-tagged fence, 1 untagged fence, 2 other tag, 3 outside any fence.
        position: order of appearance in the response.
    """

    text: str
    rank: int
    position: int

    @cached_property
    def tree(self) -> ast.Module:
        return ast.parse(self.text)

    @property
    def size(self) -> int:
        return sum(1 for line in self.text.splitlines() if line.strip())


def _fenced_chunks(response: str) -> list[tuple[int, str]]:
    """``(rank, text)`` of every fenced block and every stretch outside them, in order."""
    chunks: list[tuple[int, str]] = []
    outside: list[str] = []
    block: list[str] | None = None
    fence = rank = None
    for line in response.splitlines():
        if block is None:
            opening = _FENCE.match(line)
            if opening is None or line.count(opening.group(1)[0] * 3) > 1:  # inline code
                outside.append(line)
                continue
            chunks.append((_UNFENCED, "\n".join(outside)))
            outside, block = [], []
            fence = opening.group(1)[0] * 3
            tag = re.sub(r"[^a-z0-9+#]", "", opening.group(2).lower())
            rank = _PYTHON if tag in PYTHON_TAGS else _OTHER_TAG if tag else _UNTAGGED
            continue
        stripped = line.strip()
        if stripped.startswith(fence):  # the closing fence; anything after it is prose
            chunks.append((rank, "\n".join(block)))
            block = None
        elif stripped.endswith(fence):  # code glued to its closing fence
            block.append(line.rstrip()[: -len(fence)])
            chunks.append((rank, "\n".join(block)))
            block = None
        else:
            block.append(line)
    if block is not None:  # an unclosed block runs to the end
        chunks.append((rank, "\n".join(block)))
    chunks.append((_UNFENCED, "\n".join(outside)))
    return [(rank, text) for rank, text in chunks if text.strip()]


def _longest_parse(lines: list[str], start: int) -> int:
    """The end of the longest run ``lines[start:end]`` that parses (``start`` when none).

    Lengths are tried from the longest down, each failure cutting the run just before the
    line its syntax error names, so a run costs a few parses rather than one per line.
    """
    end = len(lines)
    while end > start:
        try:
            ast.parse("\n".join(lines[start:end]) + "\n")
            return end
        except SyntaxError as error:
            cut = start + error.lineno - 1 if error.lineno else end - 1
            end = cut if start <= cut < end else end - 1
        except (ValueError, RecursionError, MemoryError):  # null bytes, absurd nesting
            end -= 1
    return start


def _is_code(tree: ast.Module) -> bool:
    """False for runs that are only bare names or constants: prose that happens to parse
    ("Explanation", a lone number)."""
    for node in tree.body:
        if isinstance(node, ast.Expr) and isinstance(
            node.value, ast.Name | ast.Constant | ast.Attribute
        ):
            continue
        if isinstance(node, ast.AnnAssign) and node.value is None:  # "Note: it works"
            continue
        return True
    return False


def _spans_of(text: str) -> list[str]:
    """The maximal runs of lines of ``text`` that parse as code, dedented."""
    lines = textwrap.dedent(text).splitlines()
    found = []
    start = 0
    while start < len(lines):
        if not lines[start].strip():
            start += 1
            continue
        end = _longest_parse(lines, start)
        if end == start:
            start += 1
            continue
        source = "\n".join(lines[start:end]).rstrip() + "\n"
        if _is_code(ast.parse(source)):
            found.append(source)
        start = end
    return found


def code_spans(response: str) -> list[CodeSpan]:
    """Every run of lines of ``response`` that parses as Python, with its rank (fence tag)
    and position. See the module docstring for how fences and prose are told apart."""
    spans: list[CodeSpan] = []
    for rank, text in _fenced_chunks(response):
        for source in _spans_of(text):
            spans.append(CodeSpan(source, rank, len(spans)))
    return spans


def _entry_names(entry_point: str | Iterable[str] | None) -> frozenset[str]:
    if entry_point is None:
        return frozenset()
    if isinstance(entry_point, str):
        return frozenset({entry_point})
    return frozenset(entry_point)


def _top_level_names(tree: ast.Module) -> set[str]:
    """Names a module binds at top level by ``def``, ``class`` or plain assignment."""
    names = set()
    for node in tree.body:
        if isinstance(node, _DEFINITIONS):
            names.add(node.name)
        elif isinstance(node, ast.Assign | ast.AnnAssign) and node.value is not None:
            targets = node.targets if isinstance(node, ast.Assign) else [node.target]
            for target in targets:
                names.update(_stored_names(target))
    return names


def _stored_names(node: ast.AST) -> set[str]:
    return {
        n.id for n in ast.walk(node) if isinstance(n, ast.Name) and isinstance(n.ctx, ast.Store)
    }


def _select(spans: list[CodeSpan], names: frozenset[str]) -> CodeSpan | None:
    """The span holding the answer: the last definer of an entry point from the best rank,
    else the longest span (the later on ties) of the best rank."""
    if not spans:
        return None
    if names:
        definers = [span for span in spans if _top_level_names(span.tree) & names]
        if definers:
            best = min(span.rank for span in definers)
            return [span for span in definers if span.rank == best][-1]
    best = min(span.rank for span in spans)
    return max((span for span in spans if span.rank == best), key=lambda s: (s.size, s.position))


def extract_code(response: str, entry_point: str | Iterable[str] | None = None) -> str:
    """The code of a model response, as written (no pruning).

    Args:
        response: the decoded answer: fenced or unfenced code, with or without prose.
        entry_point: the function (or functions) the tests call; the span defining it wins.

    Returns:
        The chosen span (see the module docstring), ending with a newline; the whole
        response when no part of it parses as Python.
    """
    span = _select(code_spans(response), _entry_names(entry_point))
    return span.text if span is not None else response


# --------------------------------------------------------------------------- programs


@dataclass
class _Statement:
    """One top-level statement of the assembled program."""

    source: str
    origin: str  # "prompt" (always kept), "model" (the chosen span), "support" (other spans)
    kind: str  # "future", "import", "code" (kept when needed), "drop"
    binds: set[str]
    mutates: set[str]  # names whose value it changes in place (``cache[k] = v``)
    uses: set[str]  # free names it reads


def _free_names(node: ast.AST) -> set[str]:
    """Names ``node`` reads that it does not bind itself (parameters and locals excluded):
    the globals it needs (scopes are not told apart, so a local named like a global
    hides it; a rare case, and then the global's definition is dropped)."""
    loads, bound, declared = set(), set(), set()
    for child in ast.walk(node):
        if isinstance(child, ast.Name):
            (loads if isinstance(child.ctx, ast.Load) else bound).add(child.id)
        elif isinstance(child, ast.arg):
            bound.add(child.arg)
        elif isinstance(child, _DEFINITIONS) and child is not node:
            bound.add(child.name)
        elif isinstance(child, ast.alias):
            bound.add(_alias_name(child))
        elif isinstance(child, ast.ExceptHandler) and child.name:
            bound.add(child.name)
        elif isinstance(child, ast.Global):
            declared.update(child.names)
            loads.update(child.names)
    return loads - (bound - declared)


def _alias_name(alias: ast.alias) -> str:
    """The name an import binds: ``np`` for ``import numpy as np``, ``os`` for ``os.path``."""
    return (alias.asname or alias.name).split(".")[0]


def _base_name(node: ast.AST) -> str | None:
    """``x`` for ``x``, ``x.a.b``, ``x[k]``, ``x.a[k].f(...)``."""
    while isinstance(node, ast.Attribute | ast.Subscript | ast.Call | ast.Starred):
        node = node.func if isinstance(node, ast.Call) else node.value
    return node.id if isinstance(node, ast.Name) else None


def _mutated_names(node: ast.AST) -> set[str]:
    """Names changed in place by ``node``: method calls on them, item or attribute stores."""
    found = set()
    for child in ast.walk(node):
        if isinstance(child, ast.Expr) and isinstance(child.value, ast.Call):
            func = child.value.func
            if isinstance(func, ast.Attribute) and (name := _base_name(func)):
                found.add(name)
        elif isinstance(child, ast.Subscript | ast.Attribute) and isinstance(
            child.ctx, ast.Store | ast.Del
        ):
            if name := _base_name(child):
                found.add(name)
    return found


def _stops_or_reads_stdin(node: ast.AST) -> bool:
    for child in ast.walk(node):
        if isinstance(child, ast.Call) and isinstance(child.func, ast.Name):
            if child.func.id in _STOP_NAMES:
                return True
        elif isinstance(child, ast.Attribute) and isinstance(child.value, ast.Name):
            if (child.value.id, child.attr) in _STOP_ATTRIBUTES:
                return True
    return False


def _is_main_guard(node: ast.AST) -> bool:
    if not isinstance(node, ast.If) or not isinstance(node.test, ast.Compare):
        return False
    sides = [node.test.left, *node.test.comparators]
    return any(isinstance(s, ast.Name) and s.id == "__name__" for s in sides) and any(
        isinstance(s, ast.Constant) and s.value == "__main__" for s in sides
    )


def _source_of(node: ast.stmt, source: str, lines: list[str]) -> str:
    if isinstance(node, (*_DEFINITIONS, *_COMPOUND)):  # owns its lines, decorators too
        first = min([node.lineno, *(d.lineno for d in getattr(node, "decorator_list", []))])
        return "\n".join(lines[first - 1 : node.end_lineno])
    return ast.get_source_segment(source, node) or ""


def _statements(source: str, origin: str) -> list[_Statement]:
    """The top-level statements of ``source``, classified for pruning."""
    tree = ast.parse(source)
    lines = source.splitlines()
    result = []
    for node in tree.body:
        text = _source_of(node, source, lines)
        uses = _free_names(node)
        if isinstance(node, ast.Import | ast.ImportFrom):
            kind = "future" if getattr(node, "module", None) == "__future__" else "import"
            binds = {_alias_name(alias) for alias in node.names if alias.name != "*"}
            result.append(_Statement(text, origin, kind, binds, set(), set()))
        elif isinstance(node, _DEFINITIONS):
            result.append(_Statement(text, origin, "code", {node.name}, set(), uses))
        elif _is_main_guard(node) or _stops_or_reads_stdin(node):
            result.append(_Statement(text, origin, "drop", set(), set(), set()))
        elif isinstance(node, (ast.Assign, ast.AnnAssign, ast.AugAssign, *_COMPOUND)):
            binds = _stored_names(node) | {
                n.name for n in ast.walk(node) if isinstance(n, _DEFINITIONS)
            }
            binds |= {_alias_name(n) for n in ast.walk(node) if isinstance(n, ast.alias)}
            if isinstance(node, ast.AnnAssign) and node.value is None:
                binds = set()
            kind = "code" if binds or _mutated_names(node) else "drop"
            result.append(_Statement(text, origin, kind, binds, _mutated_names(node), uses))
        elif isinstance(node, ast.Expr) and _mutated_names(node):  # e.g. memo.update(...)
            result.append(_Statement(text, origin, "code", set(), _mutated_names(node), uses))
        else:  # prints, asserts, bare calls and expressions, raise, return, pass...
            result.append(_Statement(text, origin, "drop", set(), set(), set()))
    return result


def _prune(statements: list[_Statement], roots: set[str]) -> list[_Statement]:
    """Every prompt statement and model import, plus every other statement that binds or
    changes a name reachable from ``roots`` through the kept statements' free names.
    Imports of a name that the code defines are dropped."""
    variables = {
        name for s in statements if s.kind == "code" for name in s.binds
    }  # names bound by something other than an import: their in-place changes matter
    kept = [
        s.origin == "prompt"
        or (s.kind in ("import", "future") and s.origin == "model" and not s.binds & variables)
        for s in statements
    ]  # an import of a name the code defines (``from solution import f``) would replace it
    needed = set(roots)
    for index, statement in enumerate(statements):
        if kept[index]:
            needed |= statement.uses
    changed = True
    while changed:
        changed = False
        for index, statement in enumerate(statements):
            if kept[index] or statement.kind not in ("code", "import"):
                continue
            if statement.kind == "import" and statement.binds & variables:
                continue
            if statement.binds & needed or (statement.mutates & needed & variables):
                kept[index] = changed = True
                needed |= statement.uses
    return [
        s
        for s, keep in zip(statements, kept, strict=True)
        if keep and (s.kind != "drop" or s.origin == "prompt")
    ]


def _render(statements: list[_Statement]) -> str:
    """The statements as source: ``from __future__`` imports first (Python requires it),
    a repeated identical import once."""
    futures, body, imports = [], [], set()
    for statement in statements:
        if statement.kind in ("future", "import"):
            if statement.source in imports:
                continue
            imports.add(statement.source)
        (futures if statement.kind == "future" else body).append(statement.source)
    return "\n\n".join([*futures, *body]).rstrip() + "\n"


def _function_named(tree: ast.Module, names: frozenset[str]) -> ast.stmt | None:
    for node in tree.body:
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef) and node.name in names:
            return node
    return None


def _has_body(function: ast.FunctionDef | ast.AsyncFunctionDef) -> bool:
    """Whether a function does more than hold its docstring."""
    body = function.body
    if body and isinstance(body[0], ast.Expr) and isinstance(body[0].value, ast.Constant):
        body = body[1:]
    return bool(body)


_HEADER = re.compile(r"^\s*(?:async\s+def|def|class)\s")


def _complete_body(prompt: str, response: str, names: frozenset[str]) -> str | None:
    """``prompt`` followed by the longest part of ``response`` that continues its
    entry-point function, or None when no reading of the response does.

    The body is read from each Python or untagged fenced block, then from the whole
    response: from its first indented line when only prose comes before it (never from
    inside another function the response defines), or, when nothing is indented, from its
    first line indented under the signature (a body written at column 0). Leading tabs
    count as four spaces each.
    """
    raw_texts = [text for rank, text in _fenced_chunks(response) if rank in (_PYTHON, _UNTAGGED)]
    raw_texts.append(response)
    prompt_lines = prompt.splitlines()
    for raw in raw_texts:
        # Tab indentation under a space-indented prompt is a TabError: one tab, four spaces.
        lines = [
            re.sub(r"^\t+", lambda m: "    " * len(m.group()), line) for line in raw.splitlines()
        ]
        indented = [i for i, line in enumerate(lines) if line.strip() and line[0] in " \t"]
        if indented:
            if any(_HEADER.match(line) for line in lines[: indented[0]]):
                continue  # the indented lines belong to the response's own definitions
            body = lines[indented[0] :]
        else:
            body = [f"    {line}" if line.strip() else line for line in lines]
        joined = prompt_lines + body
        end = _longest_parse(joined, 0)
        if end > len(prompt_lines):
            function = _function_named(ast.parse("\n".join(joined[:end]) + "\n"), names)
            if function is not None and _has_body(function):
                return "\n".join(joined[:end]) + "\n"
    return None


def parseable_head(prompt: str) -> str:
    """The longest prefix of ``prompt`` that parses: a prompt may end in a bare signature,
    which does not parse alone; its complete head (imports, helpers) is what a restated
    function is joined to, and what the tests may run with."""
    lines = prompt.splitlines()
    return "\n".join(lines[: _longest_parse(lines, 0)]) + "\n"


def build_solution(
    prompt: str, response: str, entry_point: str | Iterable[str] | None = None
) -> str:
    """The program to test: the model's code joined to the prompt, pruned to what counts.

    Args:
        prompt: code the task supplies before the answer (HumanEval's signature, docstring
            and helpers; MBPP's test imports and setup); may be empty.
        response: the model's decoded answer in any of the shapes the module docstring lists.
        entry_point: the function (or functions) the tests call; None keeps every
            definition of the chosen code.

    Returns:
        Python source: ``from __future__`` imports, the prompt's statements (those the
        model redefines replaced by the model's versions), then the model's imports and
        needed definitions. When nothing in the response parses, the prompt followed by
        the response as written, so the test run reports the syntax error.
    """
    names = _entry_names(entry_point)
    if prompt and not prompt.endswith("\n"):
        prompt += "\n"
    prompt_lines = prompt.splitlines()
    prompt_head = parseable_head(prompt)
    spans = code_spans(response)
    chosen = _select(spans, names)

    if chosen is not None and (not names or _top_level_names(chosen.tree) & names):
        model = _statements(chosen.text, "model")
        model_names = {name for s in model if s.kind == "code" for name in s.binds}
        prompt_all = _statements(prompt_head, "prompt")
        prompt_names = {name for s in prompt_all for name in s.binds}  # the tests may use them
        prompt_part = [s for s in prompt_all if not (s.kind == "code" and s.binds & model_names)]
        support = []
        if names:
            for span in spans:
                if span is not chosen and span.rank != _OTHER_TAG:
                    support += [
                        s
                        for s in _statements(span.text, "support")
                        if not (s.binds & (model_names | prompt_names))
                    ]
        statements = prompt_part + support + model
        roots = set(names or model_names) | prompt_names
        return _render(_prune(statements, roots))

    completed = _complete_body(prompt, response, names) if names else None
    if completed is not None:
        statements = _statements(completed, "model")
        for node, statement in zip(ast.parse(completed).body, statements, strict=True):
            if node.lineno <= len(prompt_lines):
                statement.origin = "prompt"  # the prompt's code, the entry point included
        roots = set(names) | {name for s in statements if s.origin == "prompt" for name in s.binds}
        return _render(_prune(statements, roots))

    return prompt + (chosen.text if chosen is not None and prompt == prompt_head else response)


def called_names(test_code: str, context: str = "") -> list[str]:
    """The non-builtin functions ``test_code`` calls by name (MBPP asserts), in order of
    first call, except those ``context`` (the test setup) defines or imports: the names a
    solution must define."""
    provided: set[str] = set()
    try:
        context_tree = ast.parse(context)
    except SyntaxError:
        context_tree = ast.Module(body=[], type_ignores=[])
    provided |= _top_level_names(context_tree)
    for node in context_tree.body:
        if isinstance(node, ast.Import | ast.ImportFrom):
            provided.update(_alias_name(alias) for alias in node.names)
    trees = []
    try:
        trees.append(ast.parse(test_code))
    except SyntaxError:
        for line in test_code.splitlines():
            try:
                trees.append(ast.parse(line.strip()))
            except SyntaxError:
                continue
    found: list[str] = []
    for tree in trees:
        defined = _top_level_names(tree)
        calls = [n for n in ast.walk(tree) if isinstance(n, ast.Call)]
        for node in sorted(calls, key=lambda n: (n.lineno, n.col_offset)):
            if isinstance(node.func, ast.Name):
                name = node.func.id
                if name not in _BUILTINS | defined | provided and name not in found:
                    found.append(name)
    return found
