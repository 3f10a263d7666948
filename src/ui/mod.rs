//! The console. It reaches the engine only through `engine::api` and the
//! control-socket client; it never imports a driver.
