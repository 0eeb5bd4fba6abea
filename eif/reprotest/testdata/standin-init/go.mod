module standininit

go 1.26
