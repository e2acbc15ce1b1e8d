// Present so that cargo treats the hack's [build-dependencies] as build dependencies.
fn main() {}
