//! The Rhai engine rules run in: pure computation only.
//!
//! Built from the raw engine with just the language core, arithmetic, logic, strings,
//! arrays and maps — no time package (no clock), no module resolver (no loading), no
//! printing; operations, call depth, expression depth and value sizes are bounded so a
//! runaway script fails its own decision instead of the process.

use rhai::packages::{
    ArithmeticPackage, BasicArrayPackage, BasicMapPackage, BasicStringPackage, LanguageCorePackage,
    LogicPackage, MoreStringPackage, Package,
};
use rhai::{Engine, module_resolvers::DummyModuleResolver};

pub(crate) const MAX_OPERATIONS: u64 = 50_000;

pub(crate) fn engine() -> Engine {
    let mut e = Engine::new_raw();
    e.register_global_module(LanguageCorePackage::new().as_shared_module());
    e.register_global_module(ArithmeticPackage::new().as_shared_module());
    e.register_global_module(LogicPackage::new().as_shared_module());
    e.register_global_module(BasicStringPackage::new().as_shared_module());
    e.register_global_module(MoreStringPackage::new().as_shared_module());
    e.register_global_module(BasicArrayPackage::new().as_shared_module());
    e.register_global_module(BasicMapPackage::new().as_shared_module());
    e.set_module_resolver(DummyModuleResolver::new());
    e.on_print(|_| {});
    e.on_debug(|_, _, _| {});
    e.disable_symbol("eval");
    e.set_max_operations(MAX_OPERATIONS);
    e.set_max_call_levels(16);
    e.set_max_expr_depths(32, 16);
    e.set_max_string_size(4 * 1024);
    e.set_max_array_size(1024);
    e.set_max_map_size(256);
    e.set_max_functions(32);
    e.set_max_modules(0);
    e.set_max_variables(64);
    e
}
