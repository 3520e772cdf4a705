//! The cluster starts, takes a password login, and stops on drop.

use std::net::TcpStream;

use apimail_test_postgres::start_or_skip;

#[test]
fn starts_serves_and_stops_on_drop() {
    let Some(cluster) = start_or_skip("starts_serves_and_stops_on_drop") else {
        return;
    };
    let port = cluster.port();
    assert!(TcpStream::connect(("127.0.0.1", port)).is_ok());
    let db = cluster.new_database("smoke").unwrap();
    assert_eq!(db, "smoke_0");
    drop(cluster);
    assert!(
        TcpStream::connect(("127.0.0.1", port)).is_err(),
        "the server still listens after drop"
    );
}
