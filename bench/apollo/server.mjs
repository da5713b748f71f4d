// Apollo Server 5 serving the tutorial's schema (the subset of Brigade's gateway schema
// that bench/graphql.sh queries) over data held in memory: the JSON file bench/graphql.sh
// dumps from Brigade's REST APIs after seeding, so both servers answer from the same rows.
// Plain resolvers, no DataLoader: every lookup is a Map read.
//
//   node server.mjs DATA.json      prints "apollo http://127.0.0.1:PORT/" once listening
//
// PORT (environment) picks the port; unset or 0, a free one. RESPONSE_CACHE=1 adds
// Apollo's own response cache (@apollo/server-plugin-response-cache, in memory) with the
// cache hints Brigade's schema has — products and reviews 5 s, a user 5 s and private,
// each client (its address, as Brigade's anonymous clients) its own session — so a
// repeated query is answered from memory as Brigade's kept answers are.
import { readFileSync } from 'node:fs';
import { ApolloServer } from '@apollo/server';
import { startStandaloneServer } from '@apollo/server/standalone';
import responseCachePlugin from '@apollo/server-plugin-response-cache';

const file = process.argv[2];
if (!file) {
  console.error('usage: node server.mjs DATA.json');
  process.exit(2);
}
const data = JSON.parse(readFileSync(file, 'utf8'));

// As Brigade: products in id order; a product's reviews oldest (lowest id) first, at
// most 20; users by id.
const products = [...data.products].sort((a, b) => a.id - b.id);
const users = new Map(data.users.map((u) => [u.id, u]));
const reviewsOf = new Map();
for (const r of [...data.reviews].sort((a, b) => a.id - b.id)) {
  let list = reviewsOf.get(r.product_id);
  if (!list) reviewsOf.set(r.product_id, (list = []));
  if (list.length < 20) list.push(r);
}

const cached = process.env.RESPONSE_CACHE === '1';
const typeDefs = `#graphql
  enum CacheControlScope { PUBLIC PRIVATE }
  directive @cacheControl(maxAge: Int, scope: CacheControlScope, inheritMaxAge: Boolean)
    on FIELD_DEFINITION | OBJECT | INTERFACE | UNION
  type Product @cacheControl(maxAge: 5) {
    id: ID!
    name: String!
    price: Float!
    stock: Int!
    reviews: [Review!]!
  }
  type Review @cacheControl(maxAge: 5) {
    id: ID!
    rating: Int!
    comment: String
    user: User!
  }
  type User @cacheControl(maxAge: 5, scope: PRIVATE) {
    id: ID!
    name: String!
    email: String!
  }
  type Query {
    product(id: ID!): Product
    user(id: ID!): User
    products(limit: Int = 20): [Product!]!
  }
`;

const resolvers = {
  Query: {
    products: (_, { limit }) => {
      if (limit < 1 || limit > 200) throw new Error('limit must be 1 to 200');
      return products.slice(0, limit);
    },
    product: (_, { id }) => products.find((p) => String(p.id) === id) ?? null,
    user: (_, { id }) => users.get(Number(id)) ?? null,
  },
  Product: {
    reviews: (product) => reviewsOf.get(product.id) ?? [],
  },
  Review: {
    user: (review) => users.get(review.user_id),
  },
};

const plugins = cached
  ? [responseCachePlugin({ sessionId: async ({ contextValue }) => contextValue.client })]
  : [];
const server = new ApolloServer({ typeDefs, resolvers, plugins });
const port = Number(process.env.PORT ?? 0);
const { url } = await startStandaloneServer(server, {
  listen: { host: '127.0.0.1', port },
  context: async ({ req }) => ({ client: req.socket.remoteAddress ?? 'unknown' }),
});
const actual = new URL(url).port;
console.log(`apollo http://127.0.0.1:${actual}/`);
