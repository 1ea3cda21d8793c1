"""Runs a snippet from standard input statement by statement, as a Python
prompt would, and prints the value of each expression statement as JSON
(`[[source, repr], …]`), so a test can check what a seed's example returns
without changing the example."""

import ast
import json
import sys


def main() -> None:
    source = sys.stdin.read()
    tree = ast.parse(source)
    scope = {"__name__": "__main__"}
    values = []
    for node in tree.body:
        if isinstance(node, ast.Expr):
            value = eval(compile(ast.Expression(node.value), "<seed>", "eval"), scope)
            values.append([ast.get_source_segment(source, node), repr(value)])
        else:
            exec(compile(ast.Module([node], type_ignores=[]), "<seed>", "exec"), scope)
    print(json.dumps(values))


if __name__ == "__main__":
    main()
