#!/usr/bin/env bash
# Type-checks a Grafana dashboard (default: deploy/grafana/shardns.json) against
# @grafana/schema's types: gen.mjs writes it as TypeScript, `tsc --noEmit --strict` checks it.
# Needs node and the pinned packages: `npm ci --prefix deploy/grafana/check` (scripts/test.sh
# runs it). Usage: check.sh [DASHBOARD.json]
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
dashboard="$(realpath "${1:-$here/../shardns.json}")"
if [ ! -x "$here/node_modules/.bin/tsc" ]; then
    echo "missing $here/node_modules: run npm ci --prefix $here" >&2
    exit 2
fi
build="$(mktemp -d)"
trap 'rm -rf "$build"' EXIT
node "$here/gen.mjs" "$dashboard" "$build/dashboard.ts"
# tsconfig.json names build/dashboard.ts; check the generated file instead, with the same
# options, so that concurrent runs do not share a file.
sed "s|\"build/dashboard.ts\"|\"$build/dashboard.ts\"|" "$here/tsconfig.json" > "$build/tsconfig.json"
sed -i "s|\"types.ts\"|\"$here/types.ts\"|" "$build/tsconfig.json"
# The generated file holds the JSON text from its line 4 on: report errors at the JSON's lines.
status=0
"$here/node_modules/.bin/tsc" --project "$build/tsconfig.json" --strict --noEmit --pretty false \
    > "$build/errors" || status=$?
node -e '
    const [errors, json] = process.argv.slice(1);
    const text = require("fs").readFileSync(errors, "utf8");
    process.stderr.write(text.replace(/^\S*dashboard\.ts\((\d+),(\d+)\)/gm,
        (_, line, column) => `${json}:${line - 3}:${column}`));
' "$build/errors" "$dashboard"
if [ "$status" -ne 0 ]; then
    echo "$dashboard: does not type-check against @grafana/schema" >&2
    exit 1
fi
echo "$dashboard: OK (@grafana/schema $(node -p "require('$here/node_modules/@grafana/schema/package.json').version"), typescript $("$here/node_modules/.bin/tsc" --version | cut -d' ' -f2))"
