//! What async-graphql 7 leaves to us of the spec's response rules (our own code because
//! the crate does neither, see async-graphql issue #612):
//!
//! - **Field order.** "Object values should be serialized as ordered maps ... ordered by
//!   the order in which they appear in the query" (spec, Serialized Map Ordering); the
//!   crate resolves an object's fields concurrently and records them as they finish, so
//!   a field behind a DataLoader came after the plain fields asked after it.
//! - **Null propagation.** A field that failed is null, and a null in a non-null position
//!   makes its parent null, up to the nearest nullable field (spec, Handling Field
//!   Errors); the crate leaves a failed field out instead, so a client saw an object
//!   missing a non-null field rather than `null` where the schema allows it.
//!
//! [`Conform`] keeps the executed document and, once the operation has run, walks the
//! data along it: each object's keys in the order `CollectFields` gives (fragments
//! applied), a missing nullable field as null, a missing or null non-null one as its
//! parent's null. It runs outermost (register it first), so what it changes is what the
//! client gets, after any other extension (the gateway's cost measure) has seen the data
//! as it was resolved. It also gives async-graphql's own errors (a query that does not
//! parse or validate, an argument that does not fit) the error table's extensions, and,
//! where no other extension does, bounds what fragments can expand to before
//! async-graphql's own checks walk them without a bound.

use std::sync::{Arc, Mutex, PoisonError};

use async_graphql::extensions::{
    Extension, ExtensionContext, ExtensionFactory, NextExecute, NextParseQuery, NextRequest,
};
use async_graphql::indexmap::IndexMap;
use async_graphql::parser::types::{ExecutableDocument, OperationType, Selection, SelectionSet};
use async_graphql::registry::{MetaType, Registry};
use async_graphql::{Name, Response, ServerResult, Value, Variables};
use problem::{Kind, Problem};

/// The extension: add it to a schema's builder before any other.
pub struct Conform {
    /// Refuse documents whose fragments expand past [`MAX_VISITS`] (the gateway's
    /// `Limits` does its own, with its cost measure).
    bound_fragments: bool,
}

impl Conform {
    /// For a schema with no other guard on fragment expansion (a subgraph).
    pub fn bounded() -> Self {
        Self {
            bound_fragments: true,
        }
    }

    /// For a schema whose other extensions bound fragment expansion (the gateway's).
    pub fn unbounded() -> Self {
        Self {
            bound_fragments: false,
        }
    }
}

impl ExtensionFactory for Conform {
    fn create(&self) -> Arc<dyn Extension> {
        Arc::new(Executed {
            bound_fragments: self.bound_fragments,
            in_request: std::sync::atomic::AtomicBool::new(false),
            state: Mutex::default(),
        })
    }
}

/// Most selections a document may expand to, fragments spread in place (the gateway's
/// cost walk uses the same bound).
pub const MAX_VISITS: u64 = 50_000;

/// One request's document, variables and operation, kept from parsing to the answer.
struct Executed {
    bound_fragments: bool,
    /// Whether the `request` hook runs (it does over HTTP; an operation on a WebSocket
    /// goes through `execute_stream`, which calls only `execute`): where it does not,
    /// `execute` conforms the answer itself.
    in_request: std::sync::atomic::AtomicBool,
    state: Mutex<Option<(ExecutableDocument, Variables, Option<String>)>>,
}

impl Executed {
    fn finish(&self, registry: &Registry, response: &mut Response) {
        let executed = self
            .state
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take();
        if let Some((document, variables, operation_name)) = executed {
            conform(
                registry,
                &document,
                operation_name.as_deref(),
                &variables,
                &mut response.data,
            );
        }
        label_errors(response);
    }
}

#[async_trait::async_trait]
impl Extension for Executed {
    async fn request(&self, ctx: &ExtensionContext<'_>, next: NextRequest<'_>) -> Response {
        self.in_request
            .store(true, std::sync::atomic::Ordering::Relaxed);
        let mut response = next.run(ctx).await;
        self.finish(&ctx.schema_env.registry, &mut response);
        response
    }

    async fn parse_query(
        &self,
        ctx: &ExtensionContext<'_>,
        query: &str,
        variables: &Variables,
        next: NextParseQuery<'_>,
    ) -> ServerResult<ExecutableDocument> {
        if self.bound_fragments
            && query.contains("...")
            && let Ok(document) = async_graphql::parser::parse_query(query)
        {
            bounded(&document)?;
        }
        let document = next.run(ctx, query, variables).await?;
        *self.state.lock().unwrap_or_else(PoisonError::into_inner) =
            Some((document.clone(), variables.clone(), None));
        Ok(document)
    }

    async fn execute(
        &self,
        ctx: &ExtensionContext<'_>,
        operation_name: Option<&str>,
        next: NextExecute<'_>,
    ) -> Response {
        if let Some((_, _, name)) = self
            .state
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .as_mut()
        {
            *name = operation_name.map(str::to_owned);
        }
        let mut response = next.run(ctx, operation_name).await;
        if !self.in_request.load(std::sync::atomic::Ordering::Relaxed) {
            self.finish(&ctx.schema_env.registry, &mut response);
        }
        response
    }
}

/// An error of async-graphql's own speaks the error table too: a request error (it does
/// not parse, is not valid against the schema, or an argument's value does not fit its
/// type) is an invalid request; anything else is the server's, and says nothing of its
/// cause.
fn label_errors(response: &mut Response) {
    for error in &mut response.errors {
        let has_code = error
            .extensions
            .as_ref()
            .is_some_and(|x| x.get("code").is_some());
        if has_code {
            continue;
        }
        let refused = error.path.is_empty() || error.message.starts_with("Failed to parse");
        let table = if refused {
            let mut table = super::server_error(Problem::new(Kind::InvalidRequest));
            // Apollo's clients look for this code to send the query with its hash.
            if error.message == "PersistedQueryNotFound" {
                table
                    .extensions
                    .get_or_insert_with(Default::default)
                    .set("code", "PERSISTED_QUERY_NOT_FOUND");
            }
            table
        } else {
            let shaped = super::server_error(Problem::internal(error.message.clone()));
            error.message = shaped.message.clone();
            shaped
        };
        error.extensions = table.extensions;
    }
}

/// Refuses a document whose fragments, spread in place, come to more than [`MAX_VISITS`]
/// selections (fragments that each spread the next twice double at every step) or loop.
fn bounded(document: &ExecutableDocument) -> ServerResult<()> {
    fn expand<'d>(
        document: &'d ExecutableDocument,
        set: &'d SelectionSet,
        spreading: &mut Vec<&'d str>,
        visits: &mut u64,
    ) -> Result<(), &'static str> {
        for selection in &set.items {
            *visits += 1;
            if *visits > MAX_VISITS {
                return Err("the operation expands to too many selections");
            }
            match &selection.node {
                Selection::Field(field) => {
                    expand(document, &field.node.selection_set.node, spreading, visits)?;
                }
                Selection::InlineFragment(inline) => {
                    expand(document, &inline.node.selection_set.node, spreading, visits)?;
                }
                Selection::FragmentSpread(spread) => {
                    let name = spread.node.fragment_name.node.as_str();
                    if spreading.contains(&name) {
                        return Err("a fragment spreads itself");
                    }
                    if let Some(fragment) = document.fragments.get(&spread.node.fragment_name.node)
                    {
                        spreading.push(name);
                        expand(
                            document,
                            &fragment.node.selection_set.node,
                            spreading,
                            visits,
                        )?;
                        spreading.pop();
                    }
                }
            }
        }
        Ok(())
    }
    let mut visits = 0;
    for (_, operation) in document.operations.iter() {
        expand(
            document,
            &operation.node.selection_set.node,
            &mut Vec::new(),
            &mut visits,
        )
        .map_err(|why| {
            super::server_error(Problem::invalid_request(format!(
                "{why} (at most {MAX_VISITS} with fragments spread in place)"
            )))
        })?;
    }
    Ok(())
}

/// Puts `data`, the result of `operation_name` in `document`, in the spec's shape.
pub fn conform(
    registry: &Registry,
    document: &ExecutableDocument,
    operation_name: Option<&str>,
    variables: &Variables,
    data: &mut Value,
) {
    let operation = document
        .operations
        .iter()
        .find(|(name, _)| operation_name.is_none() || name.map(Name::as_str) == operation_name)
        .map(|(_, operation)| &operation.node);
    let Some(operation) = operation else {
        return;
    };
    let root = match operation.ty {
        OperationType::Query => Some(registry.query_type.as_str()),
        OperationType::Mutation => registry.mutation_type.as_deref(),
        OperationType::Subscription => registry.subscription_type.as_deref(),
    };
    let (Some(root), Value::Object(_)) = (root, &*data) else {
        return;
    };
    let walk = Walk {
        registry,
        document,
        variables,
    };
    // The root is nullable: `data` becomes null when a non-null root field failed.
    if !walk.value(data, &format!("{root}!"), &[&operation.selection_set.node]) {
        *data = Value::Null;
    }
}

struct Walk<'a> {
    registry: &'a Registry,
    document: &'a ExecutableDocument,
    variables: &'a Variables,
}

/// One response key of an object: the field it names and every selection set asked of it.
struct Collected<'d> {
    field: &'d str,
    /// The type the field is looked up on (a fragment's condition where it came from one).
    on: String,
    /// Whether it applies whatever the object's runtime type (no unresolved condition).
    certain: bool,
    selections: Vec<&'d SelectionSet>,
}

impl<'a> Walk<'a> {
    /// Shapes `value` of type `ty` (`"[Product!]!"`); false if it is, or became, null in
    /// a non-null position (its parent must become null).
    fn value(&self, value: &mut Value, ty: &str, selections: &[&'a SelectionSet]) -> bool {
        let (inner, non_null) = match ty.strip_suffix('!') {
            Some(inner) => (inner, true),
            None => (ty, false),
        };
        if matches!(value, Value::Null) {
            // async-graphql answers an object none of whose fields resolved (each failed,
            // or was skipped) with null: in a non-null position that is the object with
            // nothing in it yet, whose missing fields say whether it stands.
            if non_null && !inner.starts_with('[') && self.is_object(inner) {
                let mut object = IndexMap::new();
                if self.object(&mut object, inner, selections) {
                    *value = Value::Object(object);
                    return true;
                }
            }
            return !non_null;
        }
        let ok = if let Some(item) = inner.strip_prefix('[').and_then(|t| t.strip_suffix(']')) {
            match value {
                Value::List(items) => items
                    .iter_mut()
                    .all(|element| self.value(element, item, selections)),
                _ => true,
            }
        } else {
            match value {
                Value::Object(object) => self.object(object, inner, selections),
                _ => true,
            }
        };
        if !ok {
            *value = Value::Null;
            return !non_null;
        }
        true
    }

    /// Orders `object` (of static type `type_name`) as `selections` ask; false if a
    /// non-null field of it is missing or null.
    fn object(
        &self,
        object: &mut IndexMap<Name, Value>,
        type_name: &str,
        selections: &[&'a SelectionSet],
    ) -> bool {
        // An abstract type's runtime type is known only if the client asked __typename.
        let runtime = match self.registry.types.get(type_name) {
            Some(t) if t.is_abstract() => match object.get("__typename") {
                Some(Value::String(name)) => Some(name.clone()),
                _ => None,
            },
            _ => Some(type_name.to_owned()),
        };
        let mut collected: IndexMap<&'a str, Collected<'a>> = IndexMap::new();
        for set in selections {
            self.collect(set, type_name, runtime.as_deref(), true, &mut collected, 0);
        }
        let mut ordered = IndexMap::with_capacity(object.len());
        for (key, field) in &collected {
            let name = Name::new(key);
            let ty = self.field_type(&field.on, field.field);
            match object.shift_remove(&name) {
                Some(mut value) => {
                    if let Some(ty) = &ty
                        && !self.value(&mut value, ty, &field.selections)
                    {
                        return false;
                    }
                    ordered.insert(name, value);
                }
                // Not there: the field failed (an error says why), or its fragment's
                // condition did not hold (nothing to add).
                None if field.certain => match &ty {
                    Some(ty) if ty.ends_with('!') => return false,
                    Some(_) => {
                        ordered.insert(name, Value::Null);
                    }
                    None => {}
                },
                None => {}
            }
        }
        // Anything not accounted for (there should be nothing) keeps its place after.
        ordered.extend(std::mem::take(object));
        *object = ordered;
        true
    }

    /// The field's type as the registry spells it (`None` for a field it does not know,
    /// which is left as it is).
    fn field_type(&self, on: &str, field: &str) -> Option<String> {
        if field == "__typename" {
            return Some("String!".to_owned());
        }
        self.registry
            .types
            .get(on)
            .and_then(|t| t.field_by_name(field))
            .map(|f| f.ty.clone())
    }

    /// `CollectFields`: the response keys of `set` on an object of static type `on`
    /// (runtime type `runtime` where known), in order, fragments expanded.
    fn collect(
        &self,
        set: &'a SelectionSet,
        on: &str,
        runtime: Option<&str>,
        certain: bool,
        out: &mut IndexMap<&'a str, Collected<'a>>,
        depth: usize,
    ) {
        // Validation has refused fragment cycles; this only bounds the walk regardless.
        if depth > 64 {
            return;
        }
        for selection in &set.items {
            match &selection.node {
                Selection::Field(field) => {
                    let field = &field.node;
                    if !self.included(&field.directives) {
                        continue;
                    }
                    let entry = out
                        .entry(field.response_key().node.as_str())
                        .or_insert_with(|| Collected {
                            field: field.name.node.as_str(),
                            on: on.to_owned(),
                            certain,
                            selections: Vec::new(),
                        });
                    entry.certain |= certain;
                    entry.selections.push(&field.selection_set.node);
                }
                Selection::FragmentSpread(spread) => {
                    if !self.included(&spread.node.directives) {
                        continue;
                    }
                    if let Some(fragment) =
                        self.document.fragments.get(&spread.node.fragment_name.node)
                    {
                        let condition = fragment.node.type_condition.node.on.node.as_str();
                        self.conditioned(
                            &fragment.node.selection_set.node,
                            on,
                            Some(condition),
                            runtime,
                            certain,
                            out,
                            depth,
                        );
                    }
                }
                Selection::InlineFragment(inline) => {
                    if !self.included(&inline.node.directives) {
                        continue;
                    }
                    let condition = inline
                        .node
                        .type_condition
                        .as_ref()
                        .map(|c| c.node.on.node.as_str());
                    self.conditioned(
                        &inline.node.selection_set.node,
                        on,
                        condition,
                        runtime,
                        certain,
                        out,
                        depth,
                    );
                }
            }
        }
    }

    /// A fragment on `condition`: collected where it applies to the runtime type, and,
    /// where that is unknown, collected as uncertain (ordered if present, never
    /// required).
    #[allow(clippy::too_many_arguments)]
    fn conditioned(
        &self,
        set: &'a SelectionSet,
        on: &str,
        condition: Option<&str>,
        runtime: Option<&str>,
        certain: bool,
        out: &mut IndexMap<&'a str, Collected<'a>>,
        depth: usize,
    ) {
        let Some(condition) = condition.filter(|c| *c != on) else {
            return self.collect(set, on, runtime, certain, out, depth + 1);
        };
        match runtime {
            Some(runtime) if self.applies(condition, runtime) => {
                // Look fields up on the condition's type where it is concrete.
                let lookup = if self.is_object(condition) {
                    condition
                } else {
                    runtime
                };
                self.collect(set, lookup, Some(runtime), certain, out, depth + 1);
            }
            Some(_) => {}
            None => self.collect(set, condition, None, false, out, depth + 1),
        }
    }

    /// `@skip(if:)` and `@include(if:)` read exactly as async-graphql 7.2.1 reads them
    /// when it prunes the document (`remove_skipped_selection`): a literal, or the
    /// variable as the request sent it — a missing one (its default is not applied
    /// there) or one that is not a Boolean counts as false.
    fn included(
        &self,
        directives: &[async_graphql::Positioned<async_graphql::parser::types::Directive>],
    ) -> bool {
        directives.iter().all(|directive| {
            let directive = &directive.node;
            // Without an `if` the directive prunes nothing.
            let Some(argument) = directive.get_argument("if") else {
                return true;
            };
            let condition = match &argument.node {
                async_graphql_value::Value::Boolean(b) => *b,
                async_graphql_value::Value::Variable(name) => {
                    matches!(self.variables.get(name), Some(Value::Boolean(true)))
                }
                _ => false,
            };
            match directive.name.node.as_str() {
                "skip" => !condition,
                "include" => condition,
                _ => true,
            }
        })
    }

    fn is_object(&self, name: &str) -> bool {
        matches!(self.registry.types.get(name), Some(MetaType::Object { .. }))
    }

    /// Whether a fragment on `condition` applies to an object of type `runtime`: as
    /// async-graphql's executor decides (the type itself, or an interface it
    /// implements; a union's name does not count there, so it does not here).
    fn applies(&self, condition: &str, runtime: &str) -> bool {
        condition == runtime
            || self
                .registry
                .implements
                .get(runtime)
                .is_some_and(|interfaces| interfaces.contains(condition))
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use async_graphql::{EmptyMutation, EmptySubscription, Object, Schema};
    use serde_json::json;

    use super::Conform;

    struct Query;

    /// Fields that finish in the opposite order to the one a query asks.
    struct Thing;

    #[Object]
    impl Thing {
        /// Finishes last: yields a few times first, as a field behind a DataLoader would.
        async fn slow(&self) -> i32 {
            for _ in 0..5 {
                tokio::task::yield_now().await;
            }
            1
        }

        async fn fast(&self) -> i32 {
            2
        }

        async fn broken(&self) -> async_graphql::Result<i32> {
            Err("it broke".into())
        }

        async fn maybe(&self) -> async_graphql::Result<Option<i32>> {
            Err("it broke too".into())
        }
    }

    #[Object]
    impl Query {
        async fn thing(&self) -> Option<Thing> {
            Some(Thing)
        }

        async fn things(&self) -> Option<Vec<Thing>> {
            Some(vec![Thing, Thing])
        }

        async fn sure(&self) -> Thing {
            Thing
        }

        async fn other(&self) -> i32 {
            3
        }
    }

    async fn run(query: &str, variables: serde_json::Value) -> serde_json::Value {
        serde_json::to_value(response(query, variables).await).unwrap()
    }

    async fn response(query: &str, variables: serde_json::Value) -> async_graphql::Response {
        let schema = Schema::build(Query, EmptyMutation, EmptySubscription)
            .extension(Conform::bounded())
            .finish();
        let request = async_graphql::Request::new(query)
            .variables(async_graphql::Variables::from_json(variables));
        schema.execute(request).await
    }

    /// The keys of the object at `path` in `data`, in the order they will be written
    /// (serde_json's own map here would sort them).
    fn keys(data: &async_graphql::Value, path: &[&str]) -> Vec<String> {
        let mut value = data;
        for step in path {
            let async_graphql::Value::Object(object) = value else {
                panic!("no object at {step}");
            };
            value = &object[*step];
        }
        let async_graphql::Value::Object(object) = value else {
            panic!("not an object: {value}");
        };
        object.keys().map(|k| k.to_string()).collect()
    }

    #[tokio::test]
    async fn fields_come_back_in_the_order_asked_whenever_they_finish() {
        let answer = response(
            "{ thing { slow fast second: slow ...F } other } fragment F on Thing { fast last: fast }",
            json!({}),
        )
        .await;
        assert_eq!(keys(&answer.data, &[]), ["thing", "other"]);
        assert_eq!(
            keys(&answer.data, &["thing"]),
            ["slow", "fast", "second", "last"]
        );
        // As written on the wire.
        let text = serde_json::to_string(&answer).unwrap();
        assert!(
            text.starts_with(r#"{"data":{"thing":{"slow":1,"fast":2,"#),
            "{text}"
        );
    }

    /// A query over a WebSocket runs through `execute_stream`, which skips the `request`
    /// hook: it is conformed all the same.
    #[tokio::test]
    async fn a_query_on_a_stream_is_conformed_too() {
        use futures::StreamExt;
        let schema = Schema::build(Query, EmptyMutation, EmptySubscription)
            .extension(Conform::bounded())
            .finish();
        let mut stream = schema.execute_stream("{ thing { slow fast broken } other }");
        let answer = stream.next().await.unwrap();
        assert_eq!(keys(&answer.data, &[]), ["thing", "other"]);
        let answer = serde_json::to_value(answer).unwrap();
        assert_eq!(answer["data"], json!({ "thing": null, "other": 3 }));
        assert_eq!(answer["errors"][0]["extensions"]["code"], "INTERNAL");
    }

    #[tokio::test]
    async fn a_failed_non_null_field_nulls_its_nullable_parent() {
        let answer = run("{ thing { fast broken } other }", json!({})).await;
        assert_eq!(answer["data"], json!({ "thing": null, "other": 3 }));
        // An error without the table's extensions is the server's, its cause not told.
        assert_eq!(answer["errors"][0]["path"], json!(["thing", "broken"]));
        assert_eq!(answer["errors"][0]["extensions"]["code"], "INTERNAL");
        assert!(!answer.to_string().contains("it broke"), "{answer}");
    }

    #[tokio::test]
    async fn a_null_in_a_non_null_list_item_nulls_the_list() {
        let answer = run("{ things { broken } other }", json!({})).await;
        assert_eq!(answer["data"], json!({ "things": null, "other": 3 }));
    }

    #[tokio::test]
    async fn the_null_reaches_data_when_every_parent_is_non_null() {
        let answer = run("{ other sure { broken } }", json!({})).await;
        assert_eq!(answer["data"], json!(null));
    }

    #[tokio::test]
    async fn a_failed_nullable_field_is_null_in_its_place() {
        let answer = response("{ thing { maybe fast } }", json!({})).await;
        assert_eq!(keys(&answer.data, &["thing"]), ["maybe", "fast"]);
        let answer = serde_json::to_value(answer).unwrap();
        assert_eq!(
            answer["data"],
            json!({ "thing": { "maybe": null, "fast": 2 } })
        );
    }

    #[tokio::test]
    async fn an_object_whose_every_field_failed_is_still_an_object() {
        // async-graphql answers `sure` (non-null) with null when its only field failed.
        let answer = run("{ sure { maybe } other }", json!({})).await;
        assert_eq!(
            answer["data"],
            json!({ "sure": { "maybe": null }, "other": 3 })
        );
    }

    #[tokio::test]
    async fn an_included_field_is_required_as_any_other() {
        let answer = run(
            "query($yes: Boolean!) { thing { fast broken @include(if: $yes) } other }",
            json!({ "yes": true }),
        )
        .await;
        assert_eq!(answer["data"], json!({ "thing": null, "other": 3 }));
    }

    #[tokio::test]
    async fn a_field_included_by_a_variable_s_default_is_not_required() {
        // Whether async-graphql runs it or not, the object stands.
        let answer = run(
            "query($r: Boolean = true) { thing { fast slow @include(if: $r) } }",
            json!({}),
        )
        .await;
        assert_eq!(answer["data"]["thing"]["fast"], 2, "{answer}");
    }

    #[tokio::test]
    async fn fragments_that_multiply_are_refused_before_anything_runs() {
        let mut query = String::from("{ thing { ...F0 } }");
        for i in 0..20 {
            query.push_str(&format!(
                " fragment F{i} on Thing {{ ...F{n} ...F{n} }}",
                n = i + 1
            ));
        }
        query.push_str(" fragment F20 on Thing { fast }");
        let answer = run(&query, json!({})).await;
        assert_eq!(answer["data"], json!(null));
        let error = &answer["errors"][0];
        assert!(
            error["message"]
                .as_str()
                .unwrap()
                .contains("too many selections"),
            "{answer}"
        );
        assert_eq!(error["extensions"]["code"], "INVALID_ARGUMENT");
    }

    #[tokio::test]
    async fn async_graphql_s_own_errors_speak_the_error_table() {
        let answer = run("{ thing { nosuchfield } }", json!({})).await;
        assert_eq!(
            answer["errors"][0]["extensions"]["code"], "INVALID_ARGUMENT",
            "{answer}"
        );
        assert_eq!(answer["errors"][0]["extensions"]["status"], 400);
    }

    #[tokio::test]
    async fn a_skipped_field_is_not_a_missing_one() {
        let answer = run(
            "query($no: Boolean!) { thing { fast broken @include(if: $no) slow @skip(if: $no) } }",
            json!({ "no": false }),
        )
        .await;
        assert_eq!(answer["data"], json!({ "thing": { "fast": 2, "slow": 1 } }));
        assert!(answer.get("errors").is_none(), "{answer}");
    }
}
