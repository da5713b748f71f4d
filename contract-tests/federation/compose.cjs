// Composes Brigade's subgraphs with Apollo's composition library, checks the composed API
// schema against the gateway's, then runs Apollo's Node router over the running services
// and compares its answers with our gateway's. Exits non-zero, saying what differs.
//
// The services take calls only from our gateway or with an internal identity token: the
// router, and this script when it asks a subgraph itself, send IDENTITY_TOKEN (from
// `brigade internal-token`) as `x-brigade-identity`. Our gateway gets API_KEY, a secret
// key, so that both sides may see everything (User.email, Query.order, mutations).
'use strict';

const fs = require('node:fs');
const path = require('node:path');
const { parse, buildSchema, isObjectType, isInputObjectType, isEnumType, isScalarType } = require('graphql');
const { composeServices } = require('@apollo/composition');
const { ApolloGateway, RemoteGraphQLDataSource } = require('@apollo/gateway');
const { ApolloServer } = require('@apollo/server');
const { startStandaloneServer } = require('@apollo/server/standalone');

function args() {
  const out = {};
  const argv = process.argv.slice(2);
  for (let i = 0; i < argv.length; i += 2) out[argv[i].replace(/^--/, '')] = argv[i + 1];
  return out;
}

const failures = [];
function fail(message) {
  failures.push(message);
  console.error(`FAIL: ${message}`);
}

// Every named type of `schema` that a client sees (no introspection or built-in scalar).
function publicTypes(schema) {
  return Object.values(schema.getTypeMap()).filter(
    (t) => !t.name.startsWith('__') && !(isScalarType(t) && ['String', 'Int', 'Float', 'Boolean', 'ID'].includes(t.name)),
  );
}

// Fields by name, sorted: the order types declare fields in is not part of the contract.
function describeFields(type) {
  const fields = {};
  for (const field of Object.values(type.getFields()).sort((x, y) => x.name.localeCompare(y.name))) {
    const args = (field.args || []).map((a) => `${a.name}: ${a.type}${a.defaultValue !== undefined ? ` = ${JSON.stringify(a.defaultValue)}` : ''}`);
    fields[field.name] = `${field.type}${args.length ? ` (${args.join(', ')})` : ''}`;
  }
  return fields;
}

function shape(type) {
  if (isObjectType(type) || isInputObjectType(type)) return { kind: isObjectType(type) ? 'object' : 'input', fields: describeFields(type) };
  if (isEnumType(type)) return { kind: 'enum', values: type.getValues().map((v) => v.name).sort() };
  return { kind: 'other' };
}

// The composed API schema must be the gateway's, less what only our gateway does
// (subscriptions).
function compareSchemas(api, gateway) {
  const ours = new Map(publicTypes(gateway).filter((t) => t.name !== 'Subscription').map((t) => [t.name, shape(t)]));
  const theirs = new Map(publicTypes(api).map((t) => [t.name, shape(t)]));
  for (const [name, expected] of ours) {
    const got = theirs.get(name);
    if (!got) { fail(`type ${name} is missing from the composed schema`); continue; }
    if (JSON.stringify(got) !== JSON.stringify(expected)) {
      fail(`type ${name} differs:\n  gateway:  ${JSON.stringify(expected)}\n  composed: ${JSON.stringify(got)}`);
    }
  }
  for (const name of theirs.keys()) {
    if (!ours.has(name)) fail(`the composed schema has a type the gateway lacks: ${name}`);
  }
}

const identityToken = process.env.IDENTITY_TOKEN;
const apiKey = process.env.API_KEY;
if (!identityToken || !apiKey) {
  console.error('federation: set IDENTITY_TOKEN (`brigade internal-token`) and API_KEY (a secret key, `brigade keys create`)');
  process.exit(2);
}
const asInternal = { 'x-brigade-identity': identityToken };
const withKey = { authorization: `Bearer ${apiKey}` };

async function post(url, query, variables, headers = {}) {
  const response = await fetch(url, {
    method: 'POST',
    headers: { 'content-type': 'application/json', ...headers },
    body: JSON.stringify({ query, variables }),
  });
  const text = await response.text();
  try {
    return JSON.parse(text);
  } catch {
    throw new Error(`${url} answered ${response.status} with a body that is not JSON: ${text.slice(0, 300)}`);
  }
}

async function waitFor(description, check, seconds) {
  const deadline = Date.now() + seconds * 1000;
  for (;;) {
    const value = await check();
    if (value) return value;
    if (Date.now() > deadline) throw new Error(`timed out after ${seconds} s waiting for ${description}`);
    await new Promise((r) => setTimeout(r, 200));
  }
}

async function main() {
  const a = args();
  const subgraphs = ['catalog', 'accounts', 'orders'].map((name) => ({
    name,
    url: `${a[name]}/graphql`,
    typeDefs: parse(fs.readFileSync(path.join(a.subgraphs, `${name}.graphql`), 'utf8')),
  }));

  // 1. Composition.
  const composed = composeServices(subgraphs);
  if (composed.errors && composed.errors.length) {
    for (const e of composed.errors) fail(`composition: ${e.message}`);
    throw new Error('the subgraphs do not compose');
  }
  for (const hint of composed.hints || []) console.log(`hint: ${hint.definition.code}: ${hint.message}`);
  console.log(`composed ${subgraphs.length} subgraphs: ${composed.supergraphSdl.length} bytes of supergraph`);

  // 2. The composed API schema is the gateway's.
  const api = composed.schema.toAPISchema().toGraphQLJSSchema();
  const gatewaySchema = buildSchema(fs.readFileSync(a['gateway-sdl'], 'utf8'));
  compareSchemas(api, gatewaySchema);

  // 2b. What the running services answer to `_service { sdl }` (what a router that
  // introspects its subgraphs composes) composes to the same API schema.
  const live = [];
  for (const subgraph of subgraphs) {
    const answer = await post(subgraph.url, '{ _service { sdl } }', undefined, asInternal);
    const sdl = answer.data && answer.data._service && answer.data._service.sdl;
    if (!sdl) throw new Error(`${subgraph.name} did not serve its SDL: ${JSON.stringify(answer)}`);
    live.push({ name: subgraph.name, url: subgraph.url, typeDefs: parse(sdl) });
  }
  const composedLive = composeServices(live);
  if (composedLive.errors && composedLive.errors.length) {
    for (const e of composedLive.errors) fail(`composition of the served SDLs: ${e.message}`);
  } else {
    compareSchemas(composedLive.schema.toAPISchema().toGraphQLJSSchema(), gatewaySchema);
    console.log('ok: the SDLs the services serve compose to the same schema');
  }

  // 3. Apollo's router in front of the running services, beside our gateway. Its every
  // subgraph call carries the identity token, as a router deployed in front of Brigade's
  // services must (they refuse calls without one).
  const gateway = new ApolloGateway({
    supergraphSdl: composed.supergraphSdl,
    buildService: ({ url }) => new RemoteGraphQLDataSource({
      url,
      willSendRequest({ request }) {
        request.http.headers.set('x-brigade-identity', identityToken);
      },
    }),
  });
  const server = new ApolloServer({ gateway });
  const { url } = await startStandaloneServer(server, { listen: { port: 0, host: '127.0.0.1' } });
  const router = url.replace(/\/$/, '');
  const ours = `${a.gateway}/graphql`;
  console.log(`Apollo router at ${router}, Brigade's gateway at ${ours}`);
  try {
    const same = async (label, query, variables) => {
      const [viaRouter, viaGateway] = await Promise.all([post(router, query, variables), post(ours, query, variables, withKey)]);
      if (viaRouter.errors) fail(`${label}: the router answered errors: ${JSON.stringify(viaRouter.errors)}`);
      if (viaGateway.errors) fail(`${label}: the gateway answered errors: ${JSON.stringify(viaGateway.errors)}`);
      if (JSON.stringify(viaRouter.data) !== JSON.stringify(viaGateway.data)) {
        fail(`${label}: the answers differ:\n  router:  ${JSON.stringify(viaRouter.data).slice(0, 600)}\n  gateway: ${JSON.stringify(viaGateway.data).slice(0, 600)}`);
      } else {
        console.log(`ok: ${label}`);
      }
      return viaRouter.data;
    };

    // The tutorial's query, verbatim.
    const tutorial = `query GetProduct($id: ID!) {
  product(id: $id) {
    name
    price
    reviews {
      rating
      comment
      user {
        name
      }
    }
  }
}`;
    const laptop = await same('the tutorial\'s query', tutorial, { id: '1' });
    if (!laptop || !laptop.product || laptop.product.name !== 'Laptop') fail(`the tutorial's query did not find the Laptop: ${JSON.stringify(laptop)}`);
    const page = await same('a page of products with reviews and authors (catalog -> accounts)',
      '{ products(limit: 20) { id name reviews { rating user { id name email } } } }');
    if (!page || page.products.length === 0) fail('no products listed');
    await same('a missing product is null', '{ product(id: "999999") { name } }');

    // A write through the router, then one order read across all three subgraphs. The
    // write goes through the router alone: its idempotencyKey is the router's token's
    // client's (IDENTITY_TOKEN's), not our gateway's key's, so the same key sent to both
    // would place two orders, not name one.
    const userId = page.products.flatMap((p) => p.reviews).map((r) => r.user.id)[0] || '1';
    const placed = await post(router, `mutation Place($input: PlaceOrderInput!, $key: String!) {
      placeOrder(input: $input, idempotencyKey: $key) { id status total items { quantity unitPrice } }
    }`, { input: { userId, items: [{ productId: '2', quantity: 1 }] }, key: `federation-${process.pid}-${Date.now()}` });
    if (placed.errors || !placed.data) throw new Error(`placeOrder through the router failed: ${JSON.stringify(placed)}`);
    const id = placed.data.placeOrder.id;
    console.log(`ok: placeOrder through the router (${id}, ${placed.data.placeOrder.status})`);
    // Both must see the order in the same state: wait until it is final, then compare.
    await waitFor('the order to be final', async () => {
      const r = await post(ours, 'query($id: ID!) { order(id: $id) { status } }', { id }, withKey);
      return r.data && r.data.order && ['PAID', 'REJECTED', 'CANCELLED'].includes(r.data.order.status);
    }, 60);
    const across = await same('an order across orders, accounts and catalog',
      `query($id: ID!) { order(id: $id) { id status total currency
          items { quantity unitPrice product { id name price } }
          history { status }
          user { id name orders(first: 200) { nodes { id } pageInfo { hasNextPage } } } } }`, { id });
    if (across && across.order && across.order.items[0].product.name !== 'Mouse') fail(`the order's product should be the Mouse: ${JSON.stringify(across.order.items)}`);

    // Errors keep the error table's extensions through the router.
    const invalid = await post(router, `mutation { placeOrder(input: { userId: "1", items: [] }, idempotencyKey: "federation-invalid-${process.pid}") { id } }`);
    const ext = invalid.errors && invalid.errors[0] && invalid.errors[0].extensions;
    if (!ext || ext.code !== 'INVALID_ARGUMENT') fail(`an invalid order through the router should carry code INVALID_ARGUMENT: ${JSON.stringify(invalid)}`);
    else console.log('ok: a refused mutation keeps extensions.code through the router');
  } finally {
    await server.stop();
  }
  if (failures.length) throw new Error(`${failures.length} failure(s)`);
  console.log('federation: composed, same schema as the gateway, same answers through Apollo\'s router');
}

main().catch((error) => {
  console.error(`federation: ${error.message}`);
  process.exit(1);
});
