module regate.local/bench

go 1.22
