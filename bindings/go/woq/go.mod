module woq

go 1.19
