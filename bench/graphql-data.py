#!/usr/bin/env python3
"""Data for bench/graphql.sh, over Brigade's REST APIs only (standard library, no deps).

  graphql-data.py seed CATALOG ACCOUNTS USERS PRODUCTS REVIEWS_PER
      USERS users (accounts POST /v1/users), PRODUCTS products (catalog POST
      /v1/products) and REVIEWS_PER reviews of each product (catalog POST
      /v1/products/{id}/reviews) by the users round-robin; every write with an
      Idempotency-Key, so seeding twice creates nothing more.

  graphql-data.py page CATALOG ACCOUNTS LIMIT OUT_DIR
      Walks the page the benchmark's query asks for, as a REST client would: GET
      /v1/products?limit=LIMIT, then GET /v1/products/{id}/reviews?limit=20 of each (the
      query's `reviews`: at most 20, oldest first), then GET /v1/users/{id} of each
      distinct reviewer. Writes OUT_DIR/catalog.paths and OUT_DIR/accounts.paths (those
      requests, for bench/spread.lua), OUT_DIR/expected.json (the query's `data` as the
      REST answers make it) and OUT_DIR/data.json (every product, review and user, for
      bench/apollo/server.mjs). Prints "CATALOG_REQUESTS ACCOUNTS_REQUESTS".

  graphql-data.py check RESPONSE.json EXPECTED.json NAME
      Fails unless RESPONSE.json is a GraphQL answer without errors whose `data` equals
      EXPECTED.json; prints a one-line summary (and `extensions.cost` if there is one).

Catalog and accounts take calls only with an internal identity token, as the gateway
sends: every call carries BENCH_IDENTITY_TOKEN (`brigade internal-token`) when it is set.
"""
import json
import os
import sys
import urllib.request

TOKEN = os.environ.get("BENCH_IDENTITY_TOKEN")


def call(method, url, body=None, key=None):
    data = None if body is None else json.dumps(body).encode()
    req = urllib.request.Request(url, data=data, method=method)
    if TOKEN:
        req.add_header("x-brigade-identity", TOKEN)
    if body is not None:
        req.add_header("Content-Type", "application/json")
    if key is not None:
        req.add_header("Idempotency-Key", key)
    with urllib.request.urlopen(req, timeout=30) as resp:
        return json.load(resp)


def pages(url):
    """Every item of a paged REST list (`items`, `next_cursor`)."""
    items, cursor = [], None
    while True:
        sep = "&" if "?" in url else "?"
        page = call("GET", url + (f"{sep}cursor={cursor}" if cursor else ""))
        items += page["items"]
        cursor = page.get("next_cursor")
        if not cursor:
            return items


def seed(catalog, accounts, users, products, reviews_per):
    user_ids = []
    for i in range(1, users + 1):
        u = call("POST", f"{accounts}/v1/users",
                 {"name": f"Bench User {i}", "email": f"bench-user-{i}@example.com"},
                 key=f"bench-graphql-user-{i}")
        user_ids.append(u["id"])
    n = 0
    for i in range(1, products + 1):
        p = call("POST", f"{catalog}/v1/products",
                 {"name": f"Bench Product {i}", "price": round(1 + i * 1.25, 2), "stock": 100 + i},
                 key=f"bench-graphql-product-{i}")
        for k in range(reviews_per):
            review = {"user_id": user_ids[n % len(user_ids)], "rating": 1 + n % 5}
            if n % 3:
                review["comment"] = f"Review {k + 1} of product {i}"
            call("POST", f"{catalog}/v1/products/{p['id']}/reviews", review,
                 key=f"bench-graphql-review-{i}-{k}")
            n += 1
    print(f"seeded {users} users, {products} products, {n} reviews", file=sys.stderr)


def page(catalog, accounts, limit, out):
    catalog_paths = [f"/v1/products?limit={limit}"]
    listed = call("GET", f"{catalog}{catalog_paths[0]}")["items"]
    reviews_of, reviewers = {}, []
    for p in listed:
        path = f"/v1/products/{p['id']}/reviews?limit=20"
        catalog_paths.append(path)
        reviews_of[p["id"]] = call("GET", f"{catalog}{path}")["items"]
        for r in reviews_of[p["id"]]:
            if r["user_id"] not in reviewers:
                reviewers.append(r["user_id"])
    accounts_paths = [f"/v1/users/{u}" for u in reviewers]
    names = {u: call("GET", f"{accounts}/v1/users/{u}")["name"] for u in reviewers}
    expected = {"products": [
        {"name": p["name"],
         "reviews": [{"rating": r["rating"], "user": {"name": names[r["user_id"]]}}
                     for r in reviews_of[p["id"]]]}
        for p in listed]}
    # Everything, for Apollo Server: it answers from these rows alone.
    products = pages(f"{catalog}/v1/products?limit=200")
    data = {
        "products": [{k: p[k] for k in ("id", "name", "price", "stock")} for p in products],
        "reviews": [{k: r.get(k) for k in ("id", "product_id", "user_id", "rating", "comment")}
                    for p in products for r in pages(f"{catalog}/v1/products/{p['id']}/reviews?limit=200")],
        "users": [{k: u[k] for k in ("id", "name", "email")}
                  for u in pages(f"{accounts}/v1/users?limit=200")],
    }
    for name, lines in (("catalog.paths", catalog_paths), ("accounts.paths", accounts_paths)):
        with open(f"{out}/{name}", "w") as f:
            f.write("\n".join(lines) + "\n")
    with open(f"{out}/expected.json", "w") as f:
        json.dump(expected, f)
    with open(f"{out}/data.json", "w") as f:
        json.dump(data, f)
    print(len(catalog_paths), len(accounts_paths))


def check(response, expected, name):
    with open(response) as f:
        got = json.load(f)
    with open(expected) as f:
        want = json.load(f)
    if got.get("errors"):
        sys.exit(f"{name}: errors: {json.dumps(got['errors'])[:500]}")
    if got.get("data") != want:
        sys.exit(f"{name}: data differs from what the REST APIs hold:\n"
                 f"  got  {json.dumps(got.get('data'))[:400]}\n  want {json.dumps(want)[:400]}")
    products = want["products"]
    reviews = sum(len(p["reviews"]) for p in products)
    users = len({r["user"]["name"] for p in products for r in p["reviews"]})
    cost = got.get("extensions", {}).get("cost")
    print(f"{name}: {len(products)} products, {reviews} reviews, {users} reviewers' names,"
          f" equal to the REST data" + (f"; cost {json.dumps(cost)}" if cost else ""))


if __name__ == "__main__":
    cmd, args = sys.argv[1], sys.argv[2:]
    if cmd == "seed":
        seed(args[0], args[1], int(args[2]), int(args[3]), int(args[4]))
    elif cmd == "page":
        page(args[0], args[1], int(args[2]), args[3])
    elif cmd == "check":
        check(*args)
    else:
        sys.exit(__doc__)
