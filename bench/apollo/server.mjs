// Apollo Server 5 serving the tutorial's schema (the subset of Brigade's gateway schema
// that bench/graphql.sh queries) over data held in memory: the JSON file bench/graphql.sh
// dumps from Brigade's REST APIs after seeding, so both servers answer from the same rows.
// Plain resolvers, no DataLoader: every lookup is a Map read.
//
//   node server.mjs DATA.json      prints "apollo http://127.0.0.1:PORT/" once listening
//
// PORT (environment) picks the port; unset or 0, a free one.
import { readFileSync } from 'node:fs';
import { ApolloServer } from '@apollo/server';
import { startStandaloneServer } from '@apollo/server/standalone';

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

const typeDefs = `#graphql
  type Product {
    id: ID!
    name: String!
    price: Float!
    stock: Int!
    reviews: [Review!]!
  }
  type Review {
    id: ID!
    rating: Int!
    comment: String
    user: User!
  }
  type User {
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

const server = new ApolloServer({ typeDefs, resolvers });
const port = Number(process.env.PORT ?? 0);
const { url } = await startStandaloneServer(server, { listen: { host: '127.0.0.1', port } });
const actual = new URL(url).port;
console.log(`apollo http://127.0.0.1:${actual}/`);
