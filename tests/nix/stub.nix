# Evaluates nix/module.nix where nixpkgs is not available: a stand-in for the few `lib`
# and `pkgs` functions the module uses, and a configuration that enables it. The result
# is what the module would hand NixOS (the test reads it as JSON).
let
  lib = {
    mkEnableOption = description: { _type = "option"; default = false; inherit description; };
    mkOption = option: option // { _type = "option"; };
    types = {
      package = "package";
      str = "str";
      bool = "bool";
      path = "path";
      attrsOf = t: "attrsOf ${t}";
      nullOr = t: "nullOr ${t}";
      submodule = m: { submodule = m; };
    };
    mkIf = condition: content: { _type = "if"; inherit condition content; };
    mkDefault = content: { _type = "override"; priority = 1000; inherit content; };
    toInt = builtins.fromJSON;
    last = list: builtins.elemAt list (builtins.length list - 1);
    splitString = sep: s: builtins.filter builtins.isString (builtins.split sep s);
    mapAttrsToList = f: attrs: map (name: f name attrs.${name}) (builtins.attrNames attrs);
    removePrefix = prefix: s:
      let n = builtins.stringLength prefix;
      in if builtins.substring 0 n s == prefix then builtins.substring n (-1) s else s;
  };
  pkgs = {
    formats.toml = _: { type = "toml"; generate = name: value: "/nix/store/spec-${name}"; };
    callPackage = _: _: "/nix/store/ferrymail";
    coreutils = "/nix/store/coreutils";
  };
  config.services.ferrymail = {
    enable = true;
    package = "/nix/store/ferrymail";
    settings = {
      server.hostname = "mx.example.test";
      listeners = { mx = "0.0.0.0:25"; imaps = "0.0.0.0:993"; };
    };
    specFile = null;
    secretFiles = { tsig = "/run/agenix/tsig"; };
    openFirewall = true;
    dataDir = "/var/lib/ferrymail";
  };
  module = import ../../nix/module.nix { inherit config lib pkgs; };
  enabled = module.config;
  service = enabled.content.systemd.services.ferrymail;
in
{
  options = builtins.attrNames module.options.services.ferrymail;
  enabledBy = enabled.condition;
  spec = enabled.content.environment.etc."ferrymail/ferrymail.toml".source;
  dataDir = enabled.content.services.ferrymail.settings.server.data_dir.content;
  inherit (service) reloadTriggers wantedBy;
  inherit (service.serviceConfig) Type ExecStart ExecReload LoadCredential StateDirectory DynamicUser AmbientCapabilities;
  ports = enabled.content.networking.firewall.allowedTCPPorts.content;
}
