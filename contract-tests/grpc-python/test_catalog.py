"""A client that is not ours: generate a Python gRPC client from proto/ with grpcio-tools
and use it against a running catalog service (ProductService, ReviewService) and
accounts service (UserService).

Usage: IDENTITY_TOKEN=v1.... python test_catalog.py CATALOG_URL [proto-dir] [ACCOUNTS_URL]

The services take calls only from the gateway or with an internal identity token
(`brigade internal-token`): every call, gRPC and REST, carries IDENTITY_TOKEN as
`x-brigade-identity`, except the check that a call without it is refused.

The stubs are generated into a temporary directory at start-up (never committed). Each
check prints PASS or FAIL; the last line is "N passed, N failed". Exits 1 on any failure.
"""

import json
import os
import sys
import tempfile
import time
import traceback
import urllib.parse
import urllib.request
import uuid

import grpc
from google.rpc import error_details_pb2, status_pb2
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_status import rpc_status
from grpc_tools import protoc

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
TIMEOUT = 10  # seconds, for every unary call
DOMAIN = "brigade.dev"
IDENTITY = "x-brigade-identity"


def generate_stubs(proto_dir, out_dir):
    """protoc (bundled with grpcio-tools) over every .proto under proto_dir."""
    files = []
    for dirpath, _, names in os.walk(proto_dir):
        files += [
            os.path.relpath(os.path.join(dirpath, n), proto_dir)
            for n in names
            if n.endswith(".proto")
        ]
    if not files:
        raise SystemExit(f"no .proto files under {proto_dir}")
    # grpc_tools ships the well-known types (google/protobuf/*.proto) beside itself.
    well_known = os.path.join(os.path.dirname(protoc.__file__), "_proto")
    args = [
        "grpc_tools.protoc",
        f"-I{proto_dir}",
        f"-I{well_known}",
        f"--python_out={out_dir}",
        f"--grpc_python_out={out_dir}",
        *sorted(files),
    ]
    if protoc.main(args) != 0:
        raise SystemExit("grpc_tools.protoc failed on " + " ".join(sorted(files)))
    return sorted(files)


def channel_to(url):
    """A ready channel to the service at url. The server is on this machine: no proxy
    from the environment may sit between."""
    channel = grpc.insecure_channel(urllib.parse.urlparse(url).netloc,
                                    options=[("grpc.enable_http_proxy", 0)])
    grpc.channel_ready_future(channel).result(timeout=TIMEOUT)
    return channel


class WithIdentity(grpc.UnaryUnaryClientInterceptor, grpc.UnaryStreamClientInterceptor):
    """Adds the identity token to every call's metadata, beside what the call sends."""

    def __init__(self, token):
        self.token = token

    def _details(self, details):
        metadata = list(details.metadata or ()) + [(IDENTITY, self.token)]
        return details._replace(metadata=metadata)

    def intercept_unary_unary(self, continuation, details, request):
        return continuation(self._details(details), request)

    def intercept_unary_stream(self, continuation, details, request):
        return continuation(self._details(details), request)


def replayed(call):
    """Whether a unary call's answer was a replay of a stored one."""
    return dict(call.initial_metadata() or ()).get("idempotent-replayed") == "true"


class Checks:
    def __init__(self, url, accounts_url, token):
        self.rest = url.rstrip("/")
        self.channel = channel_to(url)
        self.accounts_channel = channel_to(accounts_url)
        # The stubs call through the token's interceptor; `self.channel` stays without it.
        identity = WithIdentity(token)
        catalog = grpc.intercept_channel(self.channel, identity)
        accounts = grpc.intercept_channel(self.accounts_channel, identity)
        self.http = urllib.request.build_opener(urllib.request.ProxyHandler({}))
        self.http.addheaders = [(IDENTITY, token)]
        from ecommerce.v1 import product_pb2, product_pb2_grpc
        from ecommerce.v1 import review_pb2, review_pb2_grpc
        from ecommerce.v1 import user_pb2, user_pb2_grpc

        self.pb = product_pb2
        self.products = product_pb2_grpc.ProductServiceStub(catalog)
        self.review_pb = review_pb2
        self.reviews = review_pb2_grpc.ReviewServiceStub(catalog)
        self.user_pb = user_pb2
        self.users = user_pb2_grpc.UserServiceStub(accounts)
        self.health = health_pb2_grpc.HealthStub(self.channel)

    # -- helpers --------------------------------------------------------------------

    def rest_products(self):
        """Every product as the REST face lists it, walking limit=200 pages."""
        items, cursor, pages = [], None, 0
        while True:
            query = {"limit": "200"}
            if cursor:
                query["cursor"] = cursor
            url = f"{self.rest}/v1/products?{urllib.parse.urlencode(query)}"
            with self.http.open(url, timeout=TIMEOUT) as response:
                assert response.status == 200, f"GET {url}: {response.status}"
                page = json.load(response)
            items += page["items"]
            pages += 1
            cursor = page.get("next_cursor")
            if not cursor:
                return items
            assert pages < 10_000, "REST pagination does not end"

    def rpc_error(self, call, *args, **kwargs):
        """Runs a call that must fail; returns the grpc.RpcError."""
        try:
            result = call(*args, timeout=TIMEOUT, **kwargs)
        except grpc.RpcError as err:
            return err
        raise AssertionError(f"expected an error, got {result!r}")

    @staticmethod
    def details(err):
        """The google.rpc.Status in grpc-status-details-bin, decoded by hand, plus the
        same through grpcio-status (which also checks it agrees with code and message)."""
        trailers = dict(err.trailing_metadata() or ())
        raw = trailers.get("grpc-status-details-bin")
        assert raw is not None, f"no grpc-status-details-bin in {sorted(trailers)}"
        status = status_pb2.Status.FromString(raw)
        assert status.code == err.code().value[0], (status.code, err.code())
        assert status.message == err.details(), (status.message, err.details())
        via_lib = rpc_status.from_call(err)
        assert via_lib == status, "grpcio-status decodes a different Status"
        found = {}
        for any_ in status.details:
            for cls in (error_details_pb2.ErrorInfo, error_details_pb2.BadRequest,
                        error_details_pb2.RetryInfo):
                if any_.Is(cls.DESCRIPTOR):
                    message = cls()
                    any_.Unpack(message)
                    found[cls.__name__] = message
        return found

    def error_info(self, err, reason):
        info = self.details(err).get("ErrorInfo")
        assert info is not None, "no google.rpc.ErrorInfo in the status details"
        assert info.reason == reason, f"ErrorInfo.reason {info.reason!r}, want {reason!r}"
        assert info.domain == DOMAIN, f"ErrorInfo.domain {info.domain!r}"
        assert info.metadata.get("type", "").startswith("https://brigade.dev/problems/"), \
            dict(info.metadata)
        assert info.metadata.get("correlation_id"), f"no correlation_id: {dict(info.metadata)}"
        return info

    def create(self, name, price, stock, key=None):
        metadata = [("idempotency-key", key)] if key else None
        request = self.pb.CreateProductRequest(name=name, price=price, stock=stock)
        return self.products.CreateProduct(request, timeout=TIMEOUT, metadata=metadata)

    # -- checks, run in this order ------------------------------------------------------

    def check_get_product_seed_laptop(self):
        p = self.products.GetProduct(self.pb.ProductRequest(product_id=1), timeout=TIMEOUT)
        assert (p.id, p.name, p.price, p.stock) == (1, "Laptop", 999.99, 50), p

    def check_call_without_identity_token_is_unauthenticated(self):
        # Straight on the channel, past the interceptor: no token, refused in gRPC's terms.
        from ecommerce.v1 import product_pb2_grpc, user_pb2_grpc
        bare = product_pb2_grpc.ProductServiceStub(self.channel)
        err = self.rpc_error(bare.GetProduct, self.pb.ProductRequest(product_id=1))
        assert err.code() == grpc.StatusCode.UNAUTHENTICATED, (err.code(), err.details())
        self.error_info(err, "UNAUTHENTICATED")
        bare = user_pb2_grpc.UserServiceStub(self.accounts_channel)
        err = self.rpc_error(bare.GetUser, self.user_pb.GetUserRequest(user_id=1))
        assert err.code() == grpc.StatusCode.UNAUTHENTICATED, (err.code(), err.details())

    def check_get_product_seed_mouse(self):
        p = self.products.GetProduct(self.pb.ProductRequest(product_id=2), timeout=TIMEOUT)
        assert (p.id, p.name, p.price, p.stock) == (2, "Mouse", 29.99, 200), p

    def check_list_products_streams_every_product(self):
        # Runs before any create, so REST and gRPC see the same rows.
        rest = self.rest_products()
        stream = self.products.ListProducts(self.pb.ListProductsRequest(page_size=0),
                                            timeout=120)
        ids, by_id = [], {}
        for p in stream:
            ids.append(p.id)
            by_id[p.id] = p
        assert len(ids) == len(rest), f"gRPC streamed {len(ids)}, REST lists {len(rest)}"
        assert len(ids) >= 3000, f"only {len(ids)} products: demo data not loaded?"
        bad = [(a, b) for a, b in zip(ids, ids[1:]) if not a < b]
        assert not bad, f"ids not strictly increasing, first at {bad[0]}"
        assert ids == [item["id"] for item in rest], "gRPC and REST list different ids"
        for item in rest[:50] + rest[-50:]:
            p = by_id[item["id"]]
            assert (p.name, p.price, p.stock) == (item["name"], item["price"], item["stock"]), \
                (p, item)
        print(f"    streamed {len(ids)} products; REST walked the same {len(rest)}")

    def check_list_products_page(self):
        # Tokens are the REST face's cursors: opaque and self-checking. The one after the
        # first product comes from the server itself.
        url = f"{self.rest}/v1/products?limit=1"
        with self.http.open(url, timeout=TIMEOUT) as response:
            token = json.load(response)["next_cursor"]
        stream = self.products.ListProducts(
            self.pb.ListProductsRequest(page_size=3, page_token=token), timeout=TIMEOUT)
        ids = [p.id for p in stream]
        assert ids == [2, 3, 4], f"page_size 3 after token {token!r} streamed ids {ids}"
        # A token the server never issued is refused, not read as an id.
        for forged in ("1", "abc"):
            stream = self.products.ListProducts(
                self.pb.ListProductsRequest(page_size=3, page_token=forged), timeout=TIMEOUT)
            err = self.rpc_error(lambda timeout: list(stream))
            assert err.code() == grpc.StatusCode.INVALID_ARGUMENT, (forged, err.code())

    def check_create_product_then_get(self):
        name = f"Python client {uuid.uuid4().hex[:8]}"
        created = self.create(name, 12.34, 7)
        assert created.id > 0 and (created.name, created.price, created.stock) == \
            (name, 12.34, 7), created
        got = self.products.GetProduct(self.pb.ProductRequest(product_id=created.id),
                                       timeout=TIMEOUT)
        assert got == created, (got, created)

    def check_not_found_with_error_info(self):
        correlation = f"py-contract-{uuid.uuid4().hex}"
        err = self.rpc_error(self.products.GetProduct,
                             self.pb.ProductRequest(product_id=2_000_000_000),
                             metadata=[("x-correlation-id", correlation)])
        assert err.code() == grpc.StatusCode.NOT_FOUND, (err.code(), err.details())
        info = self.error_info(err, "NOT_FOUND")
        assert info.metadata["type"] == "https://brigade.dev/problems/not-found", \
            dict(info.metadata)
        assert info.metadata["correlation_id"] == correlation, \
            f"sent correlation id {correlation}, ErrorInfo has {info.metadata['correlation_id']}"

    def check_validation_failure(self):
        err = self.rpc_error(self.products.CreateProduct,
                             self.pb.CreateProductRequest(name="", price=-1.0, stock=1))
        assert err.code() == grpc.StatusCode.INVALID_ARGUMENT, (err.code(), err.details())
        self.error_info(err, "VALIDATION_FAILED")
        bad = self.details(err).get("BadRequest")
        assert bad is not None, "no google.rpc.BadRequest in the status details"
        fields = {v.field for v in bad.field_violations}
        assert fields == {"name", "price"}, f"field violations for {sorted(fields)}"
        assert all(v.description for v in bad.field_violations), bad

    def check_idempotent_create(self):
        key = f"py-{uuid.uuid4()}"
        name = f"Idempotent {key[3:11]}"
        first = self.create(name, 5.0, 1, key=key)
        second = self.create(name, 5.0, 1, key=key)
        assert first.id == second.id, f"same key made two products: {first.id}, {second.id}"
        assert first == second, (first, second)
        err = self.rpc_error(self.products.CreateProduct,
                             self.pb.CreateProductRequest(name=name, price=6.0, stock=1),
                             metadata=[("idempotency-key", key)])
        assert err.code() == grpc.StatusCode.INVALID_ARGUMENT, (err.code(), err.details())
        self.error_info(err, "IDEMPOTENCY_KEY_REUSED")

    def check_batch_get_products(self):
        response = self.products.BatchGetProducts(
            self.pb.BatchGetProductsRequest(product_ids=[2, 2_000_000_000, 1]),
            timeout=TIMEOUT)
        assert [p.name for p in response.products] == ["Mouse", "Laptop"], response
        assert list(response.missing_ids) == [2_000_000_000], response

    def check_review_create_is_idempotent(self):
        key = f"py-review-{uuid.uuid4()}"
        request = self.review_pb.CreateReviewRequest(product_id=1, user_id=1, rating=4,
                                                     comment="From Python")
        first, call = self.reviews.CreateReview.with_call(
            request, timeout=TIMEOUT, metadata=[("idempotency-key", key)])
        assert (first.product_id, first.user_id, first.rating, first.comment) == \
            (1, 1, 4, "From Python"), first
        assert not replayed(call), "a first create is no replay"
        again, call = self.reviews.CreateReview.with_call(
            request, timeout=TIMEOUT, metadata=[("idempotency-key", key)])
        assert again == first and replayed(call), (again, first)

    def check_review_refusals_carry_details(self):
        err = self.rpc_error(self.reviews.CreateReview,
                             self.review_pb.CreateReviewRequest(product_id=1, user_id=1,
                                                                rating=9))
        assert err.code() == grpc.StatusCode.INVALID_ARGUMENT, (err.code(), err.details())
        self.error_info(err, "VALIDATION_FAILED")
        fields = {v.field for v in self.details(err)["BadRequest"].field_violations}
        assert fields == {"rating"}, fields
        # An author the accounts service does not know: the caller's mistake, named.
        err = self.rpc_error(self.reviews.CreateReview,
                             self.review_pb.CreateReviewRequest(product_id=1,
                                                                user_id=2_000_000_000,
                                                                rating=5))
        assert err.code() == grpc.StatusCode.INVALID_ARGUMENT, (err.code(), err.details())
        fields = {v.field for v in self.details(err)["BadRequest"].field_violations}
        assert fields == {"user_id"}, fields
        err = self.rpc_error(self.reviews.CreateReview,
                             self.review_pb.CreateReviewRequest(product_id=2_000_000_000,
                                                                user_id=1, rating=5))
        assert err.code() == grpc.StatusCode.NOT_FOUND, (err.code(), err.details())
        self.error_info(err, "NOT_FOUND")

    def check_list_reviews_in_pages(self):
        seen, token, pages = [], "", 0
        while True:
            page = self.reviews.ListReviews(
                self.review_pb.ListReviewsRequest(product_id=1, page_size=2,
                                                  page_token=token), timeout=TIMEOUT)
            assert len(page.reviews) <= 2, page
            seen += [r.id for r in page.reviews]
            pages += 1
            token = page.next_page_token
            if not token:
                break
            assert pages < 10_000, "ListReviews pagination does not end"
        assert seen == sorted(set(seen)) and seen, f"review ids {seen}"
        err = self.rpc_error(self.reviews.ListReviews,
                             self.review_pb.ListReviewsRequest(product_id=1,
                                                               page_token="forged"))
        assert err.code() == grpc.StatusCode.INVALID_ARGUMENT, (err.code(), err.details())
        fields = {v.field for v in self.details(err)["BadRequest"].field_violations}
        assert fields == {"page_token"}, fields

    def check_users_get_batch_and_create(self):
        one = self.users.GetUser(self.user_pb.GetUserRequest(user_id=1), timeout=TIMEOUT)
        assert one.id == 1 and one.name and "@" in one.email, one
        batch = self.users.BatchGetUsers(
            self.user_pb.BatchGetUsersRequest(user_ids=[2, 2_000_000_000, 1, 2]),
            timeout=TIMEOUT)
        assert [u.id for u in batch.users] == [2, 1, 2], batch
        assert list(batch.missing_ids) == [2_000_000_000], batch
        err = self.rpc_error(self.users.GetUser,
                             self.user_pb.GetUserRequest(user_id=2_000_000_000))
        assert err.code() == grpc.StatusCode.NOT_FOUND, (err.code(), err.details())
        self.error_info(err, "NOT_FOUND")
        key = f"py-user-{uuid.uuid4()}"
        email = f"py-{uuid.uuid4().hex[:12]}@example.com"
        request = self.user_pb.CreateUserRequest(name="Py Thon", email=email)
        made, call = self.users.CreateUser.with_call(
            request, timeout=TIMEOUT, metadata=[("idempotency-key", key)])
        assert made.email == email and not replayed(call), made
        again, call = self.users.CreateUser.with_call(
            request, timeout=TIMEOUT, metadata=[("idempotency-key", key)])
        assert again == made and replayed(call), (again, made)
        # The same email under another key: taken.
        err = self.rpc_error(self.users.CreateUser, request,
                             metadata=[("idempotency-key", key + "-other")])
        assert err.code() == grpc.StatusCode.ABORTED, (err.code(), err.details())
        self.error_info(err, "CONFLICT")

    def check_health_serving(self):
        response = self.health.Check(health_pb2.HealthCheckRequest(service=""),
                                     timeout=TIMEOUT)
        assert response.status == health_pb2.HealthCheckResponse.SERVING, response


def main():
    if len(sys.argv) < 2:
        raise SystemExit(__doc__)
    url = sys.argv[1]
    proto_dir = sys.argv[2] if len(sys.argv) > 2 else os.path.join(ROOT, "proto")
    accounts_url = sys.argv[3] if len(sys.argv) > 3 else url
    token = os.environ.get("IDENTITY_TOKEN")
    if not token:
        raise SystemExit("set IDENTITY_TOKEN (from `brigade internal-token`)\n\n" + __doc__)
    with tempfile.TemporaryDirectory(prefix="brigade-grpc-python-") as out:
        files = generate_stubs(proto_dir, out)
        print(f"generated Python stubs for {', '.join(files)}")
        sys.path.insert(0, out)
        checks = Checks(url, accounts_url, token)
        names = [n for n in Checks.__dict__ if n.startswith("check_")]
        passed = failed = 0
        for name in names:
            started = time.monotonic()
            try:
                getattr(checks, name)()
            except Exception:  # noqa: BLE001 - every failure is reported, then counted
                failed += 1
                print(f"FAIL {name[6:]}")
                traceback.print_exc(file=sys.stdout)
            else:
                passed += 1
                print(f"PASS {name[6:]} ({time.monotonic() - started:.2f}s)")
        checks.channel.close()
        checks.accounts_channel.close()
    print(f"grpc-python: {passed} passed, {failed} failed")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
