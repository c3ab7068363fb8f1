require ["fileinto"];
if address :domain "from" "shop.example.net" { fileinto "Orders"; }
