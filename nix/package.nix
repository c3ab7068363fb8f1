# ferrymail built from this repository with nixpkgs' Rust tooling.
{ lib, rustPlatform, pkg-config }:

rustPlatform.buildRustPackage {
  pname = "ferrymail";
  version = "0.1.0";
  src = lib.cleanSource ../.;
  cargoLock.lockFile = ../Cargo.lock;
  nativeBuildInputs = [ pkg-config ];
  # The tests start real peers (Postfix, Knot, pebble...): they run in CI and in
  # nix/test.nix, not in the sandboxed build.
  doCheck = false;
  meta = {
    description = "A declarative, self-hosted mail server: spec -> plan -> apply -> serve";
    license = lib.licenses.agpl3Plus;
    mainProgram = "ferrymail";
  };
}
