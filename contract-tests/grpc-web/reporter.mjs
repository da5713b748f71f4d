// node:test reporter: one line per test, the failure's error under it, and a closing
// summary line "grpc-web: N passed, N failed". A `todo` test (a known Brigade bug, named in
// its reason) is listed, and counted apart, without failing the run.
import { inspect } from "node:util";

export default async function* reporter(source) {
  let passed = 0;
  let failed = 0;
  let todo = 0;
  for await (const { type, data } of source) {
    if ((type !== "test:pass" && type !== "test:fail") || data.nesting !== 0) {
      if (type === "test:stdout" || type === "test:stderr") yield data.message;
      continue;
    }
    const ms = `(${Math.round(data.details.duration_ms)} ms)`;
    if (data.todo !== undefined) {
      todo++;
      const outcome = type === "test:pass" ? "now passes: drop its todo" : "still fails";
      yield `- todo ${data.name} ${ms}: ${outcome}\n    # ${data.todo}\n`;
    } else if (type === "test:pass") {
      passed++;
      yield `ok   ${data.name} ${ms}\n`;
    } else {
      failed++;
      const error = data.details.error?.cause ?? data.details.error;
      const text = inspect(error, { depth: 4 }).replace(/^/gm, "    ");
      yield `FAIL ${data.name} ${ms}\n${text}\n`;
    }
  }
  yield `${todo ? `(${todo} todo for known bugs)\n` : ""}grpc-web: ${passed} passed, ${failed} failed\n`;
}
