//! What an operation asks for, measured from its AST with its variables applied, before
//! any resolver runs: how deep it nests, how many aliases and root fields it has, whether
//! its fragments loop, and what it costs.
//!
//! The cost is Shopify's calculated query cost (the schema's description says so too):
//! a scalar or enum field costs 0; an object field 1 plus what is selected in it; a list
//! field 2 plus, for each of the items it may return, 1 plus what is selected in the item;
//! a mutation's root field 10 more. A list's size is its `limit` (or `first`/`last`)
//! argument, or its connection's (an object field with such an argument, e.g.
//! `orders(first: 10) { nodes { ... } }`, sizes the lists directly under it), else the
//! most it ever returns ([`Measure::list_sizes`]), else [`DEFAULT_LIST_SIZE`]. The requested cost counts every list as full; the actual cost,
//! measured the same way over the response, counts what came back.

use std::collections::HashMap;

use async_graphql::Variables;
use async_graphql::parser::types::{
    DocumentOperations, ExecutableDocument, Field, OperationDefinition, OperationType, Selection,
    SelectionSet,
};
use async_graphql::registry::{MetaTypeName, Registry};
use async_graphql::{Name, Positioned, Value};

/// The size assumed for a list field with neither a size argument nor a known maximum.
pub const DEFAULT_LIST_SIZE: u64 = 100;

/// A root field of a mutation costs this much on top of what it selects.
pub const MUTATION_COST: u64 = 10;

/// Most selections one measurement visits (fragments spread in place): a document whose
/// fragments multiply each other (each spreading the next twice) is refused long before
/// it could take the gateway's memory or time.
pub const MAX_VISITS: u64 = 50_000;

/// The arguments that say how many items a list field returns.
const SIZE_ARGUMENTS: [&str; 3] = ["limit", "first", "last"];

/// What one operation asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Measured {
    /// Deepest field nesting (a root field is at depth 1), introspection apart.
    pub depth: u32,
    /// Deepest nesting under `__schema` or `__type` (tools' introspection queries nest
    /// `ofType` deeper than any query of the schema's own needs; they call no backend).
    pub introspection_depth: u32,
    pub aliases: u32,
    pub root_fields: u32,
    /// Its cost with every list full.
    pub cost: u64,
}

/// Why an operation could not be measured.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Unmeasurable {
    #[error("fragment {0} spreads itself (directly or through other fragments)")]
    FragmentCycle(String),
    #[error("the operation expands to more than {MAX_VISITS} selections")]
    TooLarge,
}

impl Unmeasurable {
    /// The limit it breaks, as the refusal names it.
    pub fn limit(&self) -> &'static str {
        match self {
            Unmeasurable::FragmentCycle(_) => "fragment_cycle",
            Unmeasurable::TooLarge => "max_selections",
        }
    }
}

/// Measures operations against one schema.
pub struct Measure<'a> {
    pub registry: &'a Registry,
    /// The most items a list field without a size argument returns, by (type, field).
    pub list_sizes: &'a HashMap<(&'static str, &'static str), u64>,
}

/// The walk over one operation.
struct Walk<'a> {
    measure: &'a Measure<'a>,
    document: &'a ExecutableDocument,
    variables: &'a Variables,
    /// The operation's variables' defaults (what execution uses for one not given).
    defaults: &'a [Positioned<async_graphql::parser::types::VariableDefinition>],
    /// Fragments being spread on the way down (a cycle otherwise never ends).
    spreading: Vec<&'a str>,
    aliases: u32,
    /// Selections visited so far (see [`MAX_VISITS`]).
    visits: u64,
}

impl Measure<'_> {
    /// The operation `name` picks (the only one when `None`); `None` when there is no
    /// such operation (execution then refuses it, without running anything).
    pub fn operation<'d>(
        document: &'d ExecutableDocument,
        name: Option<&str>,
    ) -> Option<&'d Positioned<OperationDefinition>> {
        match (&document.operations, name) {
            (DocumentOperations::Single(op), _) => Some(op),
            (DocumentOperations::Multiple(ops), Some(name)) => ops.get(name),
            (DocumentOperations::Multiple(ops), None) if ops.len() == 1 => ops.values().next(),
            (DocumentOperations::Multiple(_), None) => None,
        }
    }

    /// The operation's measures, its requested cost counting every list as full.
    pub fn requested(
        &self,
        document: &ExecutableDocument,
        operation: &OperationDefinition,
        variables: &Variables,
    ) -> Result<Measured, Unmeasurable> {
        self.walk(document, operation, variables, None)
    }

    /// Expands every operation of `document` (fragments spread in place) against one
    /// budget of [`MAX_VISITS`]: refuses a document whose fragments loop or multiply,
    /// whichever of its operations would be run.
    pub fn expand_all(
        &self,
        document: &ExecutableDocument,
        variables: &Variables,
    ) -> Result<(), Unmeasurable> {
        let mut walk = Walk {
            measure: self,
            document,
            variables,
            defaults: &[],
            spreading: Vec::new(),
            aliases: 0,
            visits: 0,
        };
        for (_, operation) in document.operations.iter() {
            walk.expand(&operation.node.selection_set.node)?;
        }
        Ok(())
    }

    /// The operation's cost over what it returned (`data`).
    pub fn actual(
        &self,
        document: &ExecutableDocument,
        operation: &OperationDefinition,
        variables: &Variables,
        data: &Value,
    ) -> u64 {
        self.walk(document, operation, variables, Some(data))
            .map(|m| m.cost)
            .unwrap_or_default()
    }

    fn walk(
        &self,
        document: &ExecutableDocument,
        operation: &OperationDefinition,
        variables: &Variables,
        data: Option<&Value>,
    ) -> Result<Measured, Unmeasurable> {
        let root = match operation.ty {
            OperationType::Query => Some(self.registry.query_type.as_str()),
            OperationType::Mutation => self.registry.mutation_type.as_deref(),
            OperationType::Subscription => self.registry.subscription_type.as_deref(),
        };
        let Some(root) = root else {
            return Ok(Measured::default());
        };
        let mut walk = Walk {
            measure: self,
            document,
            variables,
            defaults: &operation.variable_definitions,
            spreading: Vec::new(),
            aliases: 0,
            visits: 0,
        };
        let mut fields = Vec::new();
        walk.fields(&operation.selection_set.node, &mut fields)?;
        let mutation = operation.ty == OperationType::Mutation;
        let (mut cost, mut depth, mut introspection_depth) = (0u64, 0u32, 0u32);
        for field in &fields {
            // Introspection calls no backend and is bounded by the schema: it costs
            // nothing, and its depth is measured apart.
            if field.name.node.starts_with("__") {
                if field.alias.is_some() {
                    walk.aliases = walk.aliases.saturating_add(1);
                }
                let field_depth = walk.nested_depth(&field.selection_set.node, 1)?;
                introspection_depth = introspection_depth.max(field_depth);
                continue;
            }
            let value = data.map(|d| at(d, field));
            let (field_cost, field_depth) = walk.field(root, field, 1, value, None)?;
            // A mutation pays its 10 whether it succeeded or failed in the backend.
            let extra = if mutation { MUTATION_COST } else { 0 };
            cost = cost.saturating_add(field_cost).saturating_add(extra);
            depth = depth.max(field_depth);
        }
        Ok(Measured {
            depth,
            introspection_depth,
            aliases: walk.aliases,
            root_fields: u32::try_from(fields.len()).unwrap_or(u32::MAX),
            cost,
        })
    }
}

/// The value of `field` in an object of the response (`Null` if absent).
fn at<'v>(object: &'v Value, field: &Field) -> &'v Value {
    const NULL: &Value = &Value::Null;
    let key = field.alias.as_ref().unwrap_or(&field.name).node.as_str();
    match object {
        Value::Object(map) => map.get(key).unwrap_or(NULL),
        _ => NULL,
    }
}

impl<'a> Walk<'a> {
    /// The fields `set` selects, fragments spread in place.
    fn fields(
        &mut self,
        set: &'a SelectionSet,
        out: &mut Vec<&'a Field>,
    ) -> Result<(), Unmeasurable> {
        for selection in &set.items {
            self.visits += 1;
            if self.visits > MAX_VISITS {
                return Err(Unmeasurable::TooLarge);
            }
            match &selection.node {
                Selection::Field(field) => out.push(&field.node),
                Selection::InlineFragment(inline) => {
                    self.fields(&inline.node.selection_set.node, out)?;
                }
                Selection::FragmentSpread(spread) => {
                    let name = spread.node.fragment_name.node.as_str();
                    if self.spreading.contains(&name) {
                        return Err(Unmeasurable::FragmentCycle(name.to_owned()));
                    }
                    // An unknown fragment is validation's to refuse; it costs nothing.
                    let Some(fragment) = self.document.fragments.get(&Name::new(name)) else {
                        continue;
                    };
                    self.spreading.push(name);
                    self.fields(&fragment.node.selection_set.node, out)?;
                    self.spreading.pop();
                }
            }
        }
        Ok(())
    }

    /// One field of an object of type `parent` at `depth`: its cost and the deepest
    /// nesting under it. `value` is what the response holds for it (actual cost);
    /// `connection` the size its parent's size argument gives a list.
    fn field(
        &mut self,
        parent: &str,
        field: &'a Field,
        depth: u32,
        value: Option<&Value>,
        connection: Option<u64>,
    ) -> Result<(u64, u32), Unmeasurable> {
        if field.alias.is_some() {
            self.aliases = self.aliases.saturating_add(1);
        }
        let registry = self.measure.registry;
        // `__typename`, introspection, and fields validation will refuse cost nothing
        // (introspection's own depth is still counted).
        let meta = registry
            .types
            .get(parent)
            .and_then(|t| t.field_by_name(field.name.node.as_str()));
        let Some(meta) = meta else {
            let deepest = self.nested_depth(&field.selection_set.node, depth)?;
            return Ok((0, deepest));
        };
        let named = MetaTypeName::concrete_typename(&meta.ty);
        let composite = registry.types.get(named).is_some_and(|t| t.is_composite());
        if !composite {
            return Ok((0, depth));
        }
        let mut children = Vec::new();
        self.fields(&field.selection_set.node, &mut children)?;
        let list = is_list(&meta.ty);
        // An object with a size argument is a connection: it sizes the lists under it.
        let sizes_children = if list {
            None
        } else {
            self.size_argument(field, meta)
        };
        let item = |this: &mut Self, value: Option<&Value>| -> Result<(u64, u32), Unmeasurable> {
            let (mut cost, mut deepest) = (1u64, depth);
            for child in &children {
                let child_value = value.map(|v| at(v, child));
                let (c, d) = this.field(
                    named,
                    child,
                    depth.saturating_add(1),
                    child_value,
                    sizes_children,
                )?;
                cost = cost.saturating_add(c);
                deepest = deepest.max(d);
            }
            Ok((cost, deepest))
        };
        if !list {
            return match value {
                Some(Value::Null) => Ok((0, depth)),
                other => item(self, other),
            };
        }
        match value {
            // Actual: the items that came back.
            Some(Value::List(items)) => {
                let (mut cost, mut deepest) = (2u64, depth);
                for v in items {
                    let (c, d) = item(self, Some(v))?;
                    cost = cost.saturating_add(c);
                    deepest = deepest.max(d);
                }
                Ok((cost, deepest))
            }
            Some(_) => Ok((0, depth)),
            // Requested: as many as it may return.
            None => {
                let size = self
                    .size_argument(field, meta)
                    .or(connection)
                    .unwrap_or_else(|| self.known_size(parent, field));
                let (each, deepest) = item(self, None)?;
                Ok((2u64.saturating_add(size.saturating_mul(each)), deepest))
            }
        }
    }

    /// Every selection under `set`, fragments spread in place (counting visits).
    fn expand(&mut self, set: &'a SelectionSet) -> Result<(), Unmeasurable> {
        let mut fields = Vec::new();
        self.fields(set, &mut fields)?;
        for field in fields {
            self.expand(&field.selection_set.node)?;
        }
        Ok(())
    }

    /// The deepest nesting of a selection the schema does not describe (introspection).
    fn nested_depth(&mut self, set: &'a SelectionSet, depth: u32) -> Result<u32, Unmeasurable> {
        let mut children = Vec::new();
        self.fields(set, &mut children)?;
        let mut deepest = depth;
        for child in children {
            if child.alias.is_some() {
                self.aliases = self.aliases.saturating_add(1);
            }
            deepest = deepest.max(self.nested_depth(&child.selection_set.node, depth + 1)?);
        }
        Ok(deepest)
    }

    /// The size a field's `limit`/`first`/`last` argument asks for (given, from a
    /// variable, or its default).
    fn size_argument(
        &self,
        field: &Field,
        meta: &async_graphql::registry::MetaField,
    ) -> Option<u64> {
        for name in SIZE_ARGUMENTS {
            let given = field
                .arguments
                .iter()
                .find(|(arg, _)| arg.node.as_str() == name)
                .map(|(_, value)| &value.node);
            // A variable takes its value; a null (given or from a variable) is the default.
            // A variable not given takes its definition's default, as execution does.
            let value = match given {
                Some(async_graphql_value::Value::Variable(v)) => match self.variables.get(v) {
                    Some(value) => number(value),
                    None => self
                        .defaults
                        .iter()
                        .find(|d| d.node.name.node == *v)
                        .and_then(|d| d.node.default_value.as_ref())
                        .and_then(|d| number(&d.node)),
                },
                Some(async_graphql_value::Value::Number(n)) => n.as_i64(),
                _ => None,
            };
            let default = meta
                .args
                .get(name)
                .and_then(|arg| arg.default_value.as_deref())
                .and_then(|d| d.parse::<i64>().ok());
            if let Some(size) = value.or(default) {
                return Some(u64::try_from(size).unwrap_or(0));
            }
        }
        None
    }

    /// The most items a list field without a size argument returns.
    fn known_size(&self, parent: &str, field: &Field) -> u64 {
        self.measure
            .list_sizes
            .iter()
            .find(|((ty, name), _)| *ty == parent && *name == field.name.node.as_str())
            .map_or(DEFAULT_LIST_SIZE, |(_, size)| *size)
    }
}

fn number(value: &Value) -> Option<i64> {
    match value {
        Value::Number(n) => n.as_i64(),
        _ => None,
    }
}

/// Whether a field's type (`[Review!]!`, `Product`, ...) is a list.
fn is_list(ty: &str) -> bool {
    match MetaTypeName::create(ty) {
        MetaTypeName::NonNull(inner) => is_list(inner),
        MetaTypeName::List(_) => true,
        MetaTypeName::Named(_) => false,
    }
}
