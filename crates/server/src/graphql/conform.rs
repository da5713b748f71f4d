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
//! [`FieldOrder`] keeps the executed document and, once the operation has run, walks the
//! data along it: each object's keys in the order `CollectFields` gives (fragments and
//! `@skip`/`@include` applied), a missing nullable field as null, a missing or null
//! non-null one as its parent's null.

use std::sync::{Arc, Mutex, PoisonError};

use async_graphql::extensions::{
    Extension, ExtensionContext, ExtensionFactory, NextExecute, NextParseQuery,
};
use async_graphql::indexmap::IndexMap;
use async_graphql::parser::types::{
    Directive, ExecutableDocument, OperationType, Selection, SelectionSet,
};
use async_graphql::registry::{MetaType, Registry};
use async_graphql::{Name, Response, ServerResult, Value, Variables};

/// The extension: add it to a schema's builder.
pub struct FieldOrder;

impl ExtensionFactory for FieldOrder {
    fn create(&self) -> Arc<dyn Extension> {
        Arc::new(Executed::default())
    }
}

/// One request's document and variables, kept from parsing to execution.
#[derive(Default)]
struct Executed(Mutex<Option<(ExecutableDocument, Variables)>>);

#[async_trait::async_trait]
impl Extension for Executed {
    async fn parse_query(
        &self,
        ctx: &ExtensionContext<'_>,
        query: &str,
        variables: &Variables,
        next: NextParseQuery<'_>,
    ) -> ServerResult<ExecutableDocument> {
        let document = next.run(ctx, query, variables).await?;
        *self.0.lock().unwrap_or_else(PoisonError::into_inner) =
            Some((document.clone(), variables.clone()));
        Ok(document)
    }

    async fn execute(
        &self,
        ctx: &ExtensionContext<'_>,
        operation_name: Option<&str>,
        next: NextExecute<'_>,
    ) -> Response {
        let mut response = next.run(ctx, operation_name).await;
        let executed = self.0.lock().unwrap_or_else(PoisonError::into_inner).take();
        if let Some((document, variables)) = executed {
            conform(
                &ctx.schema_env.registry,
                &document,
                operation_name,
                &variables,
                &mut response.data,
            );
        }
        response
    }
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

    /// The field's type as the registry spells it; `None` for what it does not describe
    /// (introspection's `__schema` and `__type`), which is left as it is.
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

    fn is_object(&self, name: &str) -> bool {
        matches!(self.registry.types.get(name), Some(MetaType::Object { .. }))
    }

    /// Whether a fragment on `condition` applies to an object of type `runtime`.
    fn applies(&self, condition: &str, runtime: &str) -> bool {
        condition == runtime
            || self
                .registry
                .types
                .get(condition)
                .is_some_and(|t| t.is_possible_type(runtime))
    }

    /// `@skip(if:)` and `@include(if:)`, with variables applied.
    fn included(&self, directives: &[async_graphql::Positioned<Directive>]) -> bool {
        directives.iter().all(|directive| {
            let directive = &directive.node;
            let condition = || match directive.get_argument("if").map(|v| &v.node) {
                Some(async_graphql_value::Value::Boolean(b)) => Some(*b),
                Some(async_graphql_value::Value::Variable(variable)) => {
                    match self.variables.get(variable) {
                        Some(Value::Boolean(b)) => Some(*b),
                        _ => None,
                    }
                }
                _ => None,
            };
            match directive.name.node.as_str() {
                "skip" => condition() != Some(true),
                "include" => condition() != Some(false),
                _ => true,
            }
        })
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use async_graphql::{EmptyMutation, EmptySubscription, Object, Schema};
    use serde_json::json;

    use super::FieldOrder;

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
            .extension(FieldOrder)
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

    #[tokio::test]
    async fn a_failed_non_null_field_nulls_its_nullable_parent() {
        let answer = run("{ thing { fast broken } other }", json!({})).await;
        assert_eq!(answer["data"], json!({ "thing": null, "other": 3 }));
        assert_eq!(answer["errors"][0]["message"], "it broke");
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
