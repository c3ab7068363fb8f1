{
  description = "ferrymail: a declarative, self-hosted mail server";
  inputs.nixpkgs.url = "github:NixOS/nixpkgs/nixos-unstable";
  outputs = { self, nixpkgs }:
    let
      system = "x86_64-linux";
      pkgs = nixpkgs.legacyPackages.${system};
    in
    {
      packages.${system}.default = pkgs.callPackage ./nix/package.nix { };
      nixosModules.default = import ./nix/module.nix;
      checks.${system}.vm = import ./nix/test.nix { inherit pkgs; };
    };
}
