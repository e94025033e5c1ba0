//! Integration tests: the real `orc` binary, run in temp dirs. One test binary (see
//! STYLE.md section 8); `support` holds the `Test` builder.

mod commands;
mod compose;
mod config_errors;
mod each_line;
mod failures;
mod faults;
mod first_minutes;
mod generate;
mod hostile;
mod interrupt;
mod invoke;
mod mcp;
mod plan;
mod providers;
mod serve;
mod shipped;
mod signals;
mod store;
mod structured;
mod support;
mod testing;
mod worker;
