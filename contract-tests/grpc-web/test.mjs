// Drives Brigade's gRPC-Web with two real gRPC-Web clients, as a browser would use them,
// against one target (run.sh runs it against both):
//
// - the gateway, the one door a browser can use: it forwards ecommerce.v1.ProductService
//   to catalog; calls carry an API key (`authorization: Bearer <key>`, from API_KEY);
//   catalog's reads are public there, its writes need a key.
// - catalog's own port (tonic-web's GrpcWebLayer, no proxy): it takes calls only from the
//   gateway or with an internal identity token (`x-brigade-identity`, from
//   `brigade internal-token`, in IDENTITY_TOKEN), reads and writes alike.
//
// The two clients:
//
// - Connect's gRPC-Web transport (@connectrpc/connect-web, over fetch) in the binary
//   format, application/grpc-web+proto. It does not implement grpc-web-text.
// - Google's grpc-web runtime (the npm `grpc-web` package, over XMLHttpRequest, provided
//   under Node by `xhr2`) in its default text format, application/grpc-web-text.
//
// Message and service types come from the proto files themselves: run.sh compiles them
// with `buf build` into a descriptor set at test time; nothing is generated or committed.
//
// Every call carries the credentials given, as metadata (`authorization` when API_KEY is
// set, `x-brigade-identity` when IDENTITY_TOKEN is), except those that check what a call
// without them gets.
//
// Usage: TARGET=gateway BASE_URL=http://127.0.0.1:8080 DESCRIPTORS=/path/descriptors.binpb \
//        API_KEY=bgd_sk_… node --test test.mjs
//        TARGET=catalog BASE_URL=http://127.0.0.1:8081 DESCRIPTORS=/path/descriptors.binpb \
//        IDENTITY_TOKEN=v1.… node --test test.mjs           (run.sh does all of this)

import assert from "node:assert/strict";
import { readFileSync } from "node:fs";
import { test } from "node:test";

import { create, createFileRegistry, fromBinary, toBinary } from "@bufbuild/protobuf";
import { FileDescriptorSetSchema } from "@bufbuild/protobuf/wkt";
import { Code, ConnectError, createClient } from "@connectrpc/connect";
import { createGrpcWebTransport } from "@connectrpc/connect-web";
import grpcWeb from "grpc-web";
import XMLHttpRequest from "xhr2";

const target = process.env.TARGET;
const baseUrl = process.env.BASE_URL;
const descriptors = process.env.DESCRIPTORS;
const apiKey = process.env.API_KEY;
const identityToken = process.env.IDENTITY_TOKEN;
if (!["gateway", "catalog"].includes(target) || !baseUrl || !descriptors || !(apiKey || identityToken)) {
  throw new Error(
    "set TARGET (gateway or catalog), BASE_URL (its base URL), DESCRIPTORS (a buf-built " +
      "descriptor set) and API_KEY (a secret key, for the gateway) or IDENTITY_TOKEN (from " +
      "`brigade internal-token`, for catalog's own port)",
  );
}
const viaGateway = target === "gateway";
const IDENTITY = "x-brigade-identity";
const AUTHORIZATION = "authorization";
/** The credentials every call carries, as metadata. */
const credentials = {
  ...(apiKey ? { [AUTHORIZATION]: `Bearer ${apiKey}` } : {}),
  ...(identityToken ? { [IDENTITY]: identityToken } : {}),
};

const registry = createFileRegistry(fromBinary(FileDescriptorSetSchema, readFileSync(descriptors)));
const ProductService = registry.getService("ecommerce.v1.ProductService");
assert.ok(ProductService, "ecommerce.v1.ProductService is in the descriptor set");

// Binary gRPC-Web through fetch. The default deadline makes every call carry
// `grpc-timeout`, which Brigade enforces; the interceptor, the credentials.
const withCredentials = (next) => (req) => {
  for (const [name, value] of Object.entries(credentials)) req.header.set(name, value);
  return next(req);
};
const transport = (interceptors) =>
  createGrpcWebTransport({ baseUrl, useBinaryFormat: true, defaultTimeoutMs: 30_000, interceptors });
const client = createClient(ProductService, transport([withCredentials]));

const LIMIT = { timeout: 60_000 };

async function collect(stream) {
  const items = [];
  for await (const item of stream) items.push(item);
  return items;
}

function assertIncreasingIds(products) {
  for (let i = 1; i < products.length; i++) {
    assert.ok(
      products[i].id > products[i - 1].id,
      `ids increase: ${products[i - 1].id} then ${products[i].id} at position ${i}`,
    );
  }
}

// ---- Connect's gRPC-Web transport, binary format --------------------------------------

test("binary: GetProduct(1) is the seed's Laptop", LIMIT, async () => {
  let contentType;
  let trailer;
  const product = await client.getProduct(
    { productId: 1 },
    { onHeader: (h) => (contentType = h.get("content-type")), onTrailer: (t) => (trailer = t) },
  );
  assert.equal(contentType, "application/grpc-web+proto");
  // A success's status travels in the body's trailers frame (flag 0x80).
  assert.equal(trailer?.get("grpc-status"), "0");
  assert.equal(product.id, 1);
  assert.equal(product.name, "Laptop");
  assert.equal(product.price, 999.99);
  assert.equal(product.stock, 50);
});

test("binary: ListProducts(page_size 5) streams exactly 5 products in id order", LIMIT, async () => {
  const products = await collect(client.listProducts({ pageSize: 5 }));
  assert.equal(products.length, 5);
  assert.equal(products[0].id, 1, "starts at the first product");
  assert.equal(products[0].name, "Laptop");
  assertIncreasingIds(products);
});

test("binary: ListProducts(page_size 0) streams every product", LIMIT, async () => {
  const products = await collect(client.listProducts({ pageSize: 0 }));
  assert.ok(products.length >= 3000, `streamed ${products.length} products, expected at least 3000`);
  assertIncreasingIds(products);
  for (const p of products) {
    assert.ok(p.name.length > 0, `product ${p.id} has a name`);
  }
});

function assertUnauthenticated(err) {
  assert.ok(err instanceof ConnectError, `a ConnectError, got ${err}`);
  assert.equal(err.code, Code.Unauthenticated, `code Unauthenticated, got ${Code[err.code]}: ${err.message}`);
  return true;
}

// The gateway serves catalog's reads to anyone (a key is optional) and needs a key for a
// write; catalog's own port refuses every call without an internal token.
if (viaGateway) {
  test("binary: a read without an API key is public (GetProduct(1) answered)", LIMIT, async () => {
    const anonymous = createClient(ProductService, transport([]));
    const product = await anonymous.getProduct({ productId: 1 });
    assert.equal(product.name, "Laptop");
  });
} else {
  test("binary: a read without the identity token is refused with Unauthenticated", LIMIT, async () => {
    const anonymous = createClient(ProductService, transport([]));
    await assert.rejects(anonymous.getProduct({ productId: 1 }), assertUnauthenticated);
  });
}

test(`binary: a write without ${viaGateway ? "an API key" : "the identity token"} is refused with Unauthenticated`, LIMIT, async () => {
  const anonymous = createClient(ProductService, transport([]));
  await assert.rejects(
    anonymous.createProduct(
      { name: "gRPC-Web Anonymous Pen", price: 1.99, stock: 1 },
      { headers: { "idempotency-key": `grpcweb-test-anonymous-${process.pid}-${Date.now()}` } },
    ),
    (err) => {
      assertUnauthenticated(err);
      // On the wire: trailers-only, grpc-status 16 (UNAUTHENTICATED) in the HTTP headers.
      assert.equal(err.metadata.get("grpc-status"), "16");
      return true;
    },
  );
});

test("binary: GetProduct(999999) fails with NotFound", LIMIT, async () => {
  await assert.rejects(
    client.getProduct({ productId: 999999 }, { headers: { "x-correlation-id": "grpcweb-test-404" } }),
    (err) => {
      assert.ok(err instanceof ConnectError, `a ConnectError, got ${err}`);
      assert.equal(err.code, Code.NotFound, `code NotFound, got ${Code[err.code]}: ${err.message}`);
      // Brigade answers an error "trailers-only": grpc-status in the HTTP headers, no body.
      assert.equal(err.rawMessage, "Product 999999 not found");
      // grpc-status-details-bin: the problem's ErrorInfo travels with the status.
      const detailTypes = err.details.map((d) => d.type ?? d.desc?.typeName);
      assert.ok(detailTypes.includes("google.rpc.ErrorInfo"), `details: ${detailTypes}`);
      // Errors carry the caller's correlation ID too.
      assert.equal(err.metadata.get("x-correlation-id"), "grpcweb-test-404");
      return true;
    },
  );
});

test("binary: CreateProduct with an empty name fails with InvalidArgument", LIMIT, async () => {
  await assert.rejects(
    client.createProduct(
      { name: "", price: 1.99, stock: 1 },
      { headers: { "idempotency-key": "grpcweb-test-invalid" } },
    ),
    (err) => {
      assert.ok(err instanceof ConnectError, `a ConnectError, got ${err}`);
      assert.equal(err.code, Code.InvalidArgument, `code InvalidArgument, got ${Code[err.code]}: ${err.message}`);
      const detailTypes = err.details.map((d) => d.type ?? d.desc?.typeName);
      assert.ok(detailTypes.includes("google.rpc.BadRequest"), `details: ${detailTypes}`);
      return true;
    },
  );
});

test("binary: CreateProduct writes, and a retry with the same idempotency-key replays it", LIMIT, async () => {
  const key = `grpcweb-test-create-${process.pid}-${Date.now()}`;
  const request = { name: "gRPC-Web Pen", price: 1.99, stock: 10 };
  const first = await client.createProduct(request, { headers: { "idempotency-key": key } });
  assert.ok(first.id > 2, `a new product id, got ${first.id}`);
  assert.equal(first.name, "gRPC-Web Pen");
  assert.equal(first.price, 1.99);
  assert.equal(first.stock, 10);
  const again = await client.createProduct(request, { headers: { "idempotency-key": key } });
  assert.equal(again.id, first.id, "the replay names the same product");
  const read = await client.getProduct({ productId: first.id });
  assert.equal(read.name, "gRPC-Web Pen");
});

test("binary: the response echoes the caller's x-correlation-id", LIMIT, async () => {
  let header;
  await client.getProduct(
    { productId: 1 },
    { headers: { "x-correlation-id": "grpcweb-test-1" }, onHeader: (h) => (header = h) },
  );
  assert.equal(header.get("x-correlation-id"), "grpcweb-test-1");
  assert.match(header.get("traceparent") ?? "", /^00-[0-9a-f]{32}-[0-9a-f]{16}-0[01]$/);
});

// ---- Google's grpc-web runtime, text format (application/grpc-web-text) ----------------

// The runtime hides content-type from its metadata, so the XMLHttpRequest it uses records
// both sides' content types: proof that the text format really went over the wire.
const exchanges = [];
globalThis.XMLHttpRequest = class RecordingXMLHttpRequest extends XMLHttpRequest {
  setRequestHeader(name, value) {
    if (name.toLowerCase() === "content-type") this.requestType = value;
    return super.setRequestHeader(name, value);
  }
  send(body) {
    this.addEventListener("loadend", () =>
      exchanges.push({ requestType: this.requestType, responseType: this.getResponseHeader("content-type") }),
    );
    return super.send(body);
  }
};
const textClient = new grpcWeb.GrpcWebClientBase({ format: "text" });

function textMethod(localName, methodType) {
  const method = ProductService.method[localName];
  const path = `/${ProductService.typeName}/${method.name}`;
  const descriptor = new grpcWeb.MethodDescriptor(
    path,
    methodType,
    Object,
    Object,
    (request) => toBinary(method.input, create(method.input, request)),
    (bytes) => fromBinary(method.output, bytes),
  );
  return { url: baseUrl + path, descriptor };
}

/** A unary call; resolves to { response, headers } or rejects with the RpcError. */
function textUnary(localName, request, metadata = {}) {
  const { url, descriptor } = textMethod(localName, grpcWeb.MethodType.UNARY);
  return new Promise((resolve, reject) => {
    let headers = {};
    textClient
      .rpcCall(url, request, { ...credentials, ...metadata }, descriptor, (err, response) =>
        err ? reject(err) : resolve({ response, headers }),
      )
      .on("metadata", (m) => (headers = m));
  });
}

function textStream(localName, request) {
  const { url, descriptor } = textMethod(localName, grpcWeb.MethodType.SERVER_STREAMING);
  return new Promise((resolve, reject) => {
    const items = [];
    let status;
    textClient
      .serverStreaming(url, request, { ...credentials }, descriptor)
      .on("data", (item) => items.push(item))
      .on("status", (s) => (status = s))
      .on("error", reject)
      .on("end", () => resolve({ items, status }));
  });
}

test("text: GetProduct(1) is the Laptop, with x-correlation-id echoed", LIMIT, async () => {
  const { response, headers } = await textUnary(
    "getProduct",
    { productId: 1 },
    { "x-correlation-id": "grpcweb-test-1" },
  );
  assert.equal(response.name, "Laptop");
  assert.equal(response.price, 999.99);
  assert.equal(response.stock, 50);
  const exchange = exchanges.at(-1);
  assert.equal(exchange.requestType, "application/grpc-web-text");
  assert.match(exchange.responseType ?? "", /^application\/grpc-web-text/);
  assert.equal(headers["x-correlation-id"], "grpcweb-test-1");
});

test("text: ListProducts(page_size 5) streams 5 products and an OK status", LIMIT, async () => {
  const { items, status } = await textStream("listProducts", { pageSize: 5 });
  assert.equal(items.length, 5);
  assertIncreasingIds(items);
  assert.equal(status?.code, grpcWeb.StatusCode.OK);
});

test("text: GetProduct(999999) fails with NOT_FOUND", LIMIT, async () => {
  await assert.rejects(textUnary("getProduct", { productId: 999999 }), (err) => {
    assert.equal(err.code, grpcWeb.StatusCode.NOT_FOUND, `code 5, got ${err.code}: ${err.message}`);
    assert.equal(err.message, "Product 999999 not found");
    return true;
  });
});

// ---- What a browser on another origin sends before any of the calls above --------------

test(
  "CORS: a cross-origin browser's preflight is allowed",
  LIMIT,
  async () => {
    // At the gateway a page sends its API key, so the preflight asks for `authorization`
    // too. On catalog's own port it asks for neither credential header: catalog's CORS
    // does not allow `x-brigade-identity` (a browser gets no internal token; its calls go
    // through the gateway).
    const requested = ["content-type", "grpc-timeout", "x-grpc-web", "x-user-agent", "x-correlation-id"];
    if (viaGateway) requested.push(AUTHORIZATION);
    const response = await fetch(`${baseUrl}/ecommerce.v1.ProductService/GetProduct`, {
      method: "OPTIONS",
      headers: {
        origin: "http://localhost:3000",
        "access-control-request-method": "POST",
        "access-control-request-headers": requested.join(","),
      },
    });
    assert.ok(response.ok, `preflight status ${response.status}`);
    assert.ok(response.headers.get("access-control-allow-origin"), "Access-Control-Allow-Origin");
    const allowed = (response.headers.get("access-control-allow-headers") ?? "")
      .toLowerCase()
      .split(",")
      .map((h) => h.trim());
    for (const h of requested) {
      assert.ok(allowed.includes(h), `preflight allows ${h}: ${allowed}`);
    }
    // The real call must let the page read the status and correlation headers. It carries
    // the credentials so that it is answered, not refused.
    const call = await fetch(`${baseUrl}/ecommerce.v1.ProductService/GetProduct`, {
      method: "POST",
      headers: {
        origin: "http://localhost:3000",
        "content-type": "application/grpc-web+proto",
        ...credentials,
      },
      body: new Uint8Array([0, 0, 0, 0, 2, 8, 1]),
    });
    const exposed = (call.headers.get("access-control-expose-headers") ?? "").toLowerCase();
    for (const h of ["grpc-status", "grpc-message", "x-correlation-id"]) {
      assert.ok(exposed.includes(h), `exposes ${h}: ${exposed}`);
    }
  },
);
