module example.com/devssh

go 1.19
