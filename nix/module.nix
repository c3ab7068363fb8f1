# services.ferrymail: the spec as Nix settings (or a file), secrets through systemd
# credentials, and a `nixos-rebuild switch` that reloads ferrymail instead of restarting
# it (ferrymail re-reads its spec on SIGHUP and applies only what changed).
{ config, lib, pkgs, ... }:

let
  cfg = config.services.ferrymail;
  toml = pkgs.formats.toml { };
  spec = if cfg.specFile != null then cfg.specFile else toml.generate "ferrymail.toml" cfg.settings;
  # "127.0.0.1:2525" -> 2525, for each declared listener.
  port = address: lib.toInt (lib.last (lib.splitString ":" address));
  ports = map port (builtins.attrValues (cfg.settings.listeners or { }));
in
{
  options.services.ferrymail = {
    enable = lib.mkEnableOption "ferrymail, a declarative mail server";

    package = lib.mkOption {
      type = lib.types.package;
      default = pkgs.callPackage ./package.nix { };
      description = "The ferrymail package.";
    };

    settings = lib.mkOption {
      description = ''
        The spec (see ferrymail's schema/ferrymail.schema.json), rendered as TOML.
        Secrets never go here: reference files from `secretFiles`, e.g.
        `{ file = "/run/credentials/ferrymail.service/tsig"; }`.
      '';
      default = { };
      type = lib.types.submodule {
        freeformType = toml.type;
        options.server.hostname = lib.mkOption {
          type = lib.types.str;
          description = "The name this server answers as; the MX records point here.";
        };
        options.listeners = lib.mkOption {
          type = lib.types.attrsOf lib.types.str;
          default = { };
          description = "Listener name (mx, submission, imaps, http...) to \"IP:port\".";
        };
      };
    };

    specFile = lib.mkOption {
      type = lib.types.nullOr lib.types.path;
      default = null;
      description = "A spec file (or directory) to use instead of `settings`.";
    };

    secretFiles = lib.mkOption {
      type = lib.types.attrsOf lib.types.path;
      default = { };
      example = { tsig = "/run/agenix/ferrymail-tsig"; };
      description = ''
        Files handed to the service with systemd's LoadCredential (agenix/sops-nix
        friendly): NAME is readable as /run/credentials/ferrymail.service/NAME.
      '';
    };

    openFirewall = lib.mkOption {
      type = lib.types.bool;
      default = false;
      description = "Open the TCP ports of the declared listeners.";
    };

    dataDir = lib.mkOption {
      type = lib.types.str;
      default = "/var/lib/ferrymail";
      description = "Where the store, spool, mailboxes and keys live (a StateDirectory).";
    };
  };

  config = lib.mkIf cfg.enable {
    services.ferrymail.settings.server.data_dir = lib.mkDefault cfg.dataDir;

    environment.etc."ferrymail/ferrymail.toml".source = spec;

    systemd.services.ferrymail = {
      description = "ferrymail mail server";
      wantedBy = [ "multi-user.target" ];
      after = [ "network-online.target" ];
      wants = [ "network-online.target" ];
      # A new spec is a reload (SIGHUP: plan and apply the difference), not a restart.
      reloadTriggers = [ spec ];
      restartTriggers = [ cfg.package ];
      environment.RUST_LOG = "info";
      serviceConfig = {
        Type = "notify";
        WatchdogSec = 60;
        ExecStart = "${cfg.package}/bin/ferrymail --spec /etc/ferrymail/ferrymail.toml serve --log-format json";
        ExecReload = "${pkgs.coreutils}/bin/kill -HUP $MAINPID";
        Restart = "on-failure";
        TimeoutStopSec = 60;
        DynamicUser = true;
        StateDirectory = lib.removePrefix "/var/lib/" cfg.dataDir;
        StateDirectoryMode = "0700";
        LoadCredential = lib.mapAttrsToList (name: file: "${name}:${file}") cfg.secretFiles;
        UMask = "0077";
        AmbientCapabilities = [ "CAP_NET_BIND_SERVICE" ];
        CapabilityBoundingSet = [ "CAP_NET_BIND_SERVICE" ];
        NoNewPrivileges = true;
        ProtectSystem = "strict";
        ProtectHome = true;
        PrivateTmp = true;
        PrivateDevices = true;
        ProtectKernelTunables = true;
        ProtectKernelModules = true;
        ProtectControlGroups = true;
        RestrictAddressFamilies = [ "AF_INET" "AF_INET6" "AF_UNIX" ];
        RestrictNamespaces = true;
        LockPersonality = true;
        MemoryDenyWriteExecute = true;
        SystemCallFilter = [ "@system-service" "~@privileged" ];
        LimitNOFILE = 65536;
      };
    };

    networking.firewall.allowedTCPPorts = lib.mkIf cfg.openFirewall ports;
  };
}
