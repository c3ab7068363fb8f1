# A NixOS VM test (needs nixpkgs and KVM; not runnable on the CI machine): the module
# starts ferrymail, which takes a mail for an alias and files it in a mailbox.
#   nix build .#checks.x86_64-linux.vm   (or: nix-build nix/test.nix)
{ pkgs ? import <nixpkgs> { } }:

pkgs.testers.runNixOSTest {
  name = "ferrymail";
  nodes.machine = { pkgs, ... }: {
    imports = [ ./module.nix ];
    services.ferrymail = {
      enable = true;
      settings = {
        server.hostname = "mx.example.test";
        listeners = { mx = "127.0.0.1:25"; imaps = "127.0.0.1:993"; };
        domains."example.test".aliases.hello.forward = [ "me@example.test" ];
        domains."example.test".aliases.me.mailbox.password.hash =
          # "secret", from `ferrymail passwd`
          "$argon2id$v=19$m=19456,t=2,p=1$RUre0o5PYX1FIhwgrk5oYQ$lcGF1o0u2+XM4DHJ3NbelNEvGNaDMyUd5H+Yz0u6jBQ";
      };
    };
    environment.systemPackages = [ pkgs.swaks ];
  };
  testScript = ''
    machine.wait_for_unit("ferrymail.service")
    machine.wait_for_open_port(25)
    machine.succeed("swaks --server 127.0.0.1 --from someone@elsewhere.test --to hello@example.test --body 'hi from the VM'")
    machine.succeed("ferrymail --spec /etc/ferrymail/ferrymail.toml status | grep -q 'last reconcile: ok'")
    # A settings change is a reload, not a restart.
    machine.succeed("systemctl reload ferrymail")
    machine.wait_for_unit("ferrymail.service")
  '';
}
